//! The `vigil` binary: parse the command line and hand over to the library.

use clap::Parser;

fn main() {
    let cli = vigil::cli::Cli::parse();
    if let Err(err) = vigil::cli::run(cli) {
        eprintln!("error: {err}");
        std::process::exit(err.exit_code());
    }
}
