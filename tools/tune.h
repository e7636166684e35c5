// `kiln tune WORKLOAD --device D --budget SECONDS`: searches schedules for
// every kernel of a workload's graph (runtime/tuner.h), keeps the winners in
// the tuning database and prints a table of default and tuned times.
// `kiln tune --export FILE` / `--import FILE` share a database (JSON, or SQL
// text when FILE ends in .sql).
#pragma once

#include <CLI/CLI.hpp>

namespace kiln {

// Adds the `tune` subcommand to the kiln CLI; run_tune() runs it once parsed.
CLI::App* add_tune_command(CLI::App& app);
int run_tune();

}  // namespace kiln
