//! `with-test-redis COMMAND [ARGS…]`: runs a command with `REDIS_URL` set to the Redis the
//! tests use ([`eventbus_tests::redis_url`]): the one already answering, or a throwaway
//! `redis-server` that stops once this process (and every test process using it) has ended.
//! CI runs the benchmark smoke run with it.

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let Some(program) = args.next() else {
        eprintln!("usage: with-test-redis COMMAND [ARGS...]");
        return ExitCode::from(2);
    };
    let status = eventbus_tests::binaries::wrapped_command(&program)
        .args(args)
        .env("REDIS_URL", eventbus_tests::redis_url())
        .status();
    match status {
        Ok(status) if status.success() => ExitCode::SUCCESS,
        Ok(status) => {
            eprintln!("with-test-redis: {} ended with {status}", program.display());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("with-test-redis: running {}: {e}", program.display());
            ExitCode::FAILURE
        }
    }
}
