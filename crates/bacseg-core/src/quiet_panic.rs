//! Panics caught and turned into errors without printing. A decoder of a third-party crate
//! that panics on a damaged file (dicom-rs's RLE decoder does on some truncated files) must
//! give the user one line naming the file, not "thread panicked at" and a backtrace before it.
//!
//! [`catch`] runs a closure under `catch_unwind` while a process-wide panic hook, installed
//! once, stays silent; outside any [`catch`] the hook that was in place before prints as
//! usual. The silence is process-wide rather than per thread because a panic inside a
//! decoder's rayon task happens on a worker thread and reaches the caller by unwinding.

use std::panic::{AssertUnwindSafe, PanicHookInfo};
use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};

static ACTIVE: AtomicUsize = AtomicUsize::new(0);
static INSTALL: Once = Once::new();

type Hook = Box<dyn Fn(&PanicHookInfo<'_>) + Sync + Send + 'static>;

fn install() {
    INSTALL.call_once(|| {
        let previous: Hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if ACTIVE.load(Ordering::SeqCst) == 0 {
                previous(info);
            }
        }));
    });
}

/// Decrements the count of active [`catch`] scopes however the scope ends.
struct Scope;

impl Drop for Scope {
    fn drop(&mut self) {
        ACTIVE.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Run `f`; a panic inside it is returned as its message, and nothing is printed.
pub fn catch<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    install();
    ACTIVE.fetch_add(1, Ordering::SeqCst);
    let _scope = Scope;
    std::panic::catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_string()))
            .unwrap_or_else(|| "unknown panic".into())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::panic, reason = "the panic under test")]
    fn a_panic_becomes_its_message() {
        assert_eq!(catch(|| 7), Ok(7));
        let err = catch(|| -> u8 { panic!("bad {}", "rle") }).unwrap_err();
        assert_eq!(err, "bad rle");
        assert_eq!(ACTIVE.load(Ordering::SeqCst), 0);
    }
}
