//! What a service on Redis needs, in one import: `use eventbus_redis::prelude::*;` brings
//! eventbus-core's prelude, `.redis(...)` on the app builder, and the Redis types.

pub use crate::app::AppBuilderExt;
pub use crate::config::RedisConfig;
pub use crate::transport::RedisTransport;
pub use eventbus_core::prelude::*;
