//! The `vigil` binary: parse the command line and hand over to the library.

use clap::Parser;

fn main() {
    let cli = vigil::cli::Cli::parse();
    if let Err(err) = vigil::cli::run(cli) {
        eprintln!("error: {err}");
        std::process::exit(err.exit_code());
    }
}

/// mimalloc instead of the system allocator: small per-request and per-tensor-op allocations
/// dominate `vigil serve`, and mimalloc's per-thread heaps made it ~20% faster (see Cargo.toml).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
