//! The `settle` binary: CLI parsing, logging and exit codes. Work happens in
//! the library.

use mimalloc::MiMalloc;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

mod cli;

fn main() {
    std::process::exit(cli::main());
}
