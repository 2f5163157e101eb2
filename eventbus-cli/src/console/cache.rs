//! One reply of a page every open tab polls (the overview, the projections), shared by all
//! the requests within [`MAX_AGE`] of it: Redis sees one round of `SCAN`s and `XINFO`s per
//! interval, however many tabs are open. Requests that come while it is being made wait for
//! it rather than make their own. A console write (the guard calls [`Sampled::expire`]) makes the next
//! request read afresh, so that a page shows what it just did.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::sync::Mutex;

/// How long a reply is shared: a little under the pages' 1 s poll.
pub(crate) const MAX_AGE: Duration = Duration::from_millis(900);

/// A reply, when it was made, and the expiry generation it was made in.
struct Reply {
    made: Instant,
    generation: u64,
    body: Value,
}

/// The last reply of one page; see the [module docs](self).
#[derive(Default)]
pub(crate) struct Sampled {
    last: Mutex<Option<Reply>>,
    /// Bumped by [`expire`](Self::expire): a reply of an older generation is not shared.
    generation: AtomicU64,
}

impl Sampled {
    /// The last reply if it is younger than [`MAX_AGE`] and no write came since; otherwise
    /// a new one from `make`, with `sampled_at_ms` (Unix milliseconds) set in it. A failed
    /// `make` is not kept: the next request tries again.
    pub(crate) async fn get<F, Fut, E>(&self, make: F) -> Result<Value, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Value, E>>,
    {
        let mut last = self.last.lock().await;
        let generation = self.generation.load(Ordering::SeqCst);
        if let Some(reply) = last.as_ref() {
            if reply.generation == generation && reply.made.elapsed() < MAX_AGE {
                return Ok(reply.body.clone());
            }
        }
        let mut body = make().await?;
        if let Value::Object(map) = &mut body {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            map.insert("sampled_at_ms".into(), Value::from(now));
        }
        *last = Some(Reply {
            made: Instant::now(),
            generation,
            body: body.clone(),
        });
        Ok(body)
    }

    /// The next request makes a new reply (one being made now is not shared either).
    pub(crate) fn expire(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    async fn made(sampled: &Sampled, count: &AtomicUsize) -> Value {
        sampled
            .get(|| async {
                let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok::<_, ()>(serde_json::json!({ "n": n }))
            })
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn concurrent_requests_share_one_reply_until_it_ages_or_a_write_expires_it() {
        let sampled = Arc::new(Sampled::default());
        let count = Arc::new(AtomicUsize::new(0));
        let replies = futures_util::future::join_all((0..5).map(|_| {
            let (sampled, count) = (sampled.clone(), count.clone());
            async move { made(&sampled, &count).await }
        }))
        .await;
        assert_eq!(count.load(Ordering::SeqCst), 1, "made once for 5 requests");
        assert!(replies.iter().all(|r| r == &replies[0]));
        assert!(replies[0]["sampled_at_ms"].as_u64().is_some_and(|t| t > 0));

        sampled.expire();
        assert_eq!(made(&sampled, &count).await["n"], 2, "a write expires it");
        assert_eq!(made(&sampled, &count).await["n"], 2, "shared again");
        tokio::time::sleep(MAX_AGE).await;
        assert_eq!(made(&sampled, &count).await["n"], 3, "aged out");
    }

    #[tokio::test]
    async fn a_failure_is_not_kept() {
        let sampled = Sampled::default();
        let failed = sampled.get(|| async { Err::<Value, _>("down") }).await;
        assert_eq!(failed, Err("down"));
        let count = AtomicUsize::new(0);
        assert_eq!(made(&sampled, &count).await["n"], 1);
    }
}
