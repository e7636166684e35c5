// `kiln cache`: the on-disk kernel cache (runtime/disk_cache.h).
//   kiln cache info      its folder, entries and bytes
//   kiln cache clear     deletes every entry
//   kiln cache compile --config tinyllama-1.1b --prefill 512
//                        compiles a model's decode graph and a prefill graph
//                        of that many tokens (as `kiln generate` does, without
//                        weights) and prints the seconds and the disk cache's
//                        hits and misses: run twice to see a cold and a warm start.
#pragma once

#include <CLI/CLI.hpp>

namespace kiln {

// Adds the `cache` subcommand to the kiln CLI; run_cache() runs it once parsed.
CLI::App* add_cache_command(CLI::App& app);
int run_cache();

}  // namespace kiln
