//! Running under systemd as a `Type=notify` service: tell it when the server is ready, feed its
//! watchdog while the server is alive, and say when it stops. Outside systemd (no
//! `NOTIFY_SOCKET`, no `WATCHDOG_USEC`) every call does nothing.
//!
//! The watchdog is fed only while `alive()` says the work is moving (the appliance's recorder
//! loop still advancing its clock, say), so a process whose sockets are open but whose work is
//! wedged is restarted instead of left silent.

use std::time::Duration;

use sd_notify::NotifyState;

/// Tells systemd the server is up; `status` is what `systemctl status` shows.
pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Tells systemd the server is stopping.
pub fn stopping() {
    notify(&[NotifyState::Stopping]);
}

fn notify(states: &[NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if let Err(e) = sd_notify::notify(states) {
        // Once: a vanished socket would otherwise log twice per watchdog period.
        if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tracing::warn!(error = %e, "cannot notify systemd");
        }
    }
}

/// How often to feed a watchdog of `timeout`: twice per timeout, as systemd advises.
pub fn feed_interval(timeout: Duration) -> Duration {
    (timeout / 2).max(Duration::from_millis(100))
}

/// Feeds systemd's watchdog every half timeout while `alive()` returns true, if the service
/// has a watchdog; `None` when it has none.
pub fn spawn_watchdog(
    mut alive: impl FnMut() -> bool + Send + 'static,
) -> Option<tokio::task::JoinHandle<()>> {
    let timeout = sd_notify::watchdog_enabled()?;
    let every = feed_interval(timeout);
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            if alive() {
                notify(&[NotifyState::Watchdog]);
            } else {
                tracing::error!("not feeding the watchdog: the work has stopped moving");
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_is_fed_twice_per_timeout() {
        assert_eq!(
            feed_interval(Duration::from_secs(30)),
            Duration::from_secs(15)
        );
        assert_eq!(
            feed_interval(Duration::from_millis(50)),
            Duration::from_millis(100)
        );
    }
}
