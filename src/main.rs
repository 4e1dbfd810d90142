//! The `vigil` binary: parse the command line and hand over to the library.

use clap::Parser;

/// Training frees and reallocates the same large buffers every step; jemalloc reuses them where
/// glibc's allocator returns them to the kernel and takes page faults to get them back.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    let cli = vigil::cli::Cli::parse();
    if let Err(err) = vigil::cli::run(cli) {
        eprintln!("error: {err}");
        std::process::exit(err.exit_code());
    }
}
