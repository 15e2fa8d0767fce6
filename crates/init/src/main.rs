//! `strata-init [--generic] -- <bootstrap argv...>`: the agent binary. See the library docs.

use std::process::ExitCode;

fn main() -> ExitCode {
    let config = match strata_init::Config::from_env(std::env::args_os().skip(1)) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("strata-init: {e}");
            return ExitCode::from(2);
        }
    };
    match strata_init::run(config) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("strata-init: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            ExitCode::FAILURE
        }
    }
}
