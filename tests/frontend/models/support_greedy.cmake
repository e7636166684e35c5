# The support_greedy tests' driver (cmake -P): runs `kiln generate` greedily on
# one prompt of a shipped model and checks the prompt's token ids, the generated
# token ids and the printed text against PyTorch's, committed in
# tests/frontend/models/data/support_greedy.json by
# `scripts/check_model.py --write-reference` (its prompts keep a top-two logit
# margin over 0.05 at every step, so f32 summation order cannot flip a tie).
#
#   cmake -DKILN=bin/kiln -DREFERENCE=support_greedy.json -DMODELS=models
#         -DMODEL=support-teacher -DINDEX=0 -DDEVICE=cpu -P support_greedy.cmake

foreach(var KILN REFERENCE MODELS MODEL INDEX DEVICE)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "support_greedy.cmake: -D${var}=... is missing")
  endif()
endforeach()

file(READ "${REFERENCE}" ref)
string(JSON max_tokens GET "${ref}" max_tokens)
string(JSON entry GET "${ref}" models ${MODEL} ${INDEX})
string(JSON prompt GET "${entry}" prompt)
string(JSON want_text GET "${entry}" text)

# "1 2 3" from a JSON array of integers.
function(json_ids json key out)
  string(JSON n LENGTH "${json}" ${key})
  set(ids "")
  math(EXPR last "${n} - 1")
  foreach(i RANGE ${last})
    string(JSON t GET "${json}" ${key} ${i})
    string(APPEND ids " ${t}")
  endforeach()
  string(STRIP "${ids}" ids)
  set(${out} "${ids}" PARENT_SCOPE)
endfunction()
json_ids("${entry}" prompt_ids want_prompt_ids)
json_ids("${entry}" ids want_ids)

execute_process(
  COMMAND "${KILN}" generate --model "${MODELS}/${MODEL}" --device ${DEVICE} --dtype f32
          --temperature 0 --max-tokens ${max_tokens} --print-ids --prompt "${prompt}"
  OUTPUT_VARIABLE got_text ERROR_VARIABLE log RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "kiln generate failed (${rc}):\n${log}")
endif()
# kiln ends its text with one newline.
string(REGEX REPLACE "\n$" "" got_text "${got_text}")
string(REGEX MATCH "prompt ids: ([0-9 ]*)" _ "${log}")
set(got_prompt_ids "${CMAKE_MATCH_1}")
string(REGEX MATCH "generated ids: ([0-9 ]*)" _ "${log}")
set(got_ids "${CMAKE_MATCH_1}")

set(failed "")
if(NOT got_prompt_ids STREQUAL want_prompt_ids)
  string(APPEND failed "prompt ids differ\n  kiln:    ${got_prompt_ids}\n  PyTorch: ${want_prompt_ids}\n")
endif()
if(NOT got_ids STREQUAL want_ids)
  string(APPEND failed "generated ids differ\n  kiln:    ${got_ids}\n  PyTorch: ${want_ids}\n")
endif()
if(NOT got_text STREQUAL want_text)
  string(APPEND failed "text differs\n  kiln:    [${got_text}]\n  PyTorch: [${want_text}]\n")
endif()
if(failed)
  message(FATAL_ERROR "${MODEL} on ${DEVICE}, prompt [${prompt}]:\n${failed}kiln's log:\n${log}")
endif()
message(STATUS "${MODEL} on ${DEVICE}: ${max_tokens} greedy tokens as PyTorch's")
