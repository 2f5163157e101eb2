//! Running user code so that a panic is a failure of that call, not of the caller.
//!
//! A panic caught here is logged once, as an error with its message and location, inside
//! the current span (the handler's): a panic hook, installed the first time, chained to the
//! one before it, keeps the panics this module catches off the default hook's stderr output
//! and passes every other panic on.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Once;
use std::task::{Context, Poll};

thread_local! {
    /// How many catching calls are running on this thread (their panics are ours to log).
    static CATCHING: Cell<u32> = const { Cell::new(0) };
    /// Where the last caught panic on this thread happened.
    static LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Builds a future with `make` and awaits it; a panic in either step becomes `Err` with the
/// panic's message. (A closure handler can panic in its synchronous part, while making its
/// future, as well as while running it.)
pub(crate) async fn catch<F, Fut>(make: F) -> Result<Fut::Output, String>
where
    F: FnOnce() -> Fut,
    Fut: Future,
{
    install_hook();
    let made = {
        let _catching = Catching::enter();
        std::panic::catch_unwind(AssertUnwindSafe(make))
    };
    let fut = made.map_err(|p| caught(p.as_ref()))?;
    Shielded {
        inner: Box::pin(fut),
    }
    .await
    .map_err(|p| caught(p.as_ref()))
}

/// Polls a future with its panics caught (and marked as ours for the hook).
struct Shielded<Fut: Future> {
    inner: Pin<Box<Fut>>,
}

impl<Fut: Future> Future for Shielded<Fut> {
    type Output = Result<Fut::Output, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let _catching = Catching::enter();
        let inner = &mut self.inner;
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.as_mut().poll(cx))) {
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

/// Marks this thread as running a catching call while alive.
struct Catching;

impl Catching {
    fn enter() -> Self {
        CATCHING.with(|c| c.set(c.get() + 1));
        Catching
    }
}

impl Drop for Catching {
    fn drop(&mut self) {
        CATCHING.with(|c| c.set(c.get().saturating_sub(1)));
    }
}

/// Logs a caught panic (message and location) in the current span; returns its message.
fn caught(panic: &(dyn Any + Send)) -> String {
    let text = message(panic);
    let location = LOCATION.with(|l| l.borrow_mut().take());
    tracing::error!(
        panic.message = %text,
        panic.location = location.as_deref().unwrap_or("unknown"),
        "panicked"
    );
    text
}

/// Installs the panic hook once (see the module documentation).
fn install_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if CATCHING.with(Cell::get) > 0 {
                let location = info.location().map(|l| l.to_string());
                LOCATION.with(|l| *l.borrow_mut() = location);
            } else {
                previous(info);
            }
        }));
    });
}

/// The text of a panic payload.
pub(crate) fn message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn catches_panics_while_making_and_while_running() {
        assert_eq!(catch(|| async { 5 }).await, Ok(5));
        let sync = catch(|| -> std::future::Ready<()> { panic!("early") }).await;
        assert_eq!(sync, Err("early".to_string()));
        let later = catch(|| async { panic!("late {}", 1) }).await;
        assert_eq!(later, Err("late 1".to_string()));
    }
}
