//! The `vigil` binary: parse the command line and hand over to the library.

use clap::Parser;

fn main() {
    // `vigil runs | head` closes the pipe early; Rust ignores SIGPIPE, so printing then panics.
    // Leave quietly instead, as a Unix tool does, with the shell's code for SIGPIPE.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default_hook(info);
    }));
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
