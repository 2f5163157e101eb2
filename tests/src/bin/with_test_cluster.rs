//! `with-test-cluster COMMAND [ARGS…]`: starts a local Redis Cluster of 3 masters and 3
//! replicas on free ports ([`eventbus_tests::RedisCluster`]), runs a command with
//! `REDIS_URL` set to its `redis+cluster://` URL, and stops every node when the command ends.
//! CI runs the examples that work on a cluster with it.

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let Some(program) = args.next() else {
        eprintln!("usage: with-test-cluster COMMAND [ARGS...]");
        return ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("with-test-cluster: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cluster = runtime.block_on(eventbus_tests::RedisCluster::start());
    let status = eventbus_tests::binaries::wrapped_command(&program)
        .args(args)
        .env("REDIS_URL", cluster.url())
        .status();
    drop(cluster);
    match status {
        Ok(status) if status.success() => ExitCode::SUCCESS,
        Ok(status) => {
            eprintln!(
                "with-test-cluster: {} ended with {status}",
                program.display()
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("with-test-cluster: running {}: {e}", program.display());
            ExitCode::FAILURE
        }
    }
}
