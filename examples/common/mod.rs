//! Shared by the examples.

use eventbus_redis::{RedisConfig, RedisTransport};

/// Connects, or says in one line what to run and exits with status 2.
pub async fn connect_or_exit(config: RedisConfig) -> RedisTransport {
    match RedisTransport::connect(config).await {
        Ok(t) => t,
        Err(e) => {
            eprintln!(
                "error: {e} (start Redis with `redis-server --save '' --appendonly no`, \
                 set REDIS_URL, or run with --in-memory)"
            );
            std::process::exit(2)
        }
    }
}
