//! The `vigil` binary: parse the command line and hand over to the library.

/// Training frees and reallocates the same large buffers every step; jemalloc reuses them where
/// glibc's allocator returns them to the kernel and takes page faults to get them back. It also
/// serves `vigil serve`'s many small per-request allocations from per-thread caches.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
            std::process::exit(vigil::error::EXIT_BROKEN_PIPE);
        }
        default_hook(info);
    }));
    let cli = vigil::cli::parse();
    if let Err(err) = vigil::cli::run(cli) {
        eprintln!("error: {err}");
        std::process::exit(err.exit_code());
    }
}
