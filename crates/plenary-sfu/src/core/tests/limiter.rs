use std::time::{Duration, Instant};

use crate::core::limiter::KeyframeLimiter;

#[test]
fn first_request_goes_out_and_the_rest_fold_into_one() {
    let t0 = Instant::now();
    let ms = |n| t0 + Duration::from_millis(n);
    let mut l = KeyframeLimiter::new(Duration::from_millis(500));
    assert!(!l.due(t0));
    assert_eq!(l.next_due(), None);
    assert!(l.allow(t0));
    assert!(!l.allow(ms(100)));
    assert!(!l.allow(ms(300)));
    assert_eq!(l.next_due(), Some(ms(500)));
    assert!(!l.due(ms(499)));
    assert!(l.due(ms(500)));
    // Sent once only.
    assert!(!l.due(ms(1500)));
    assert_eq!(l.next_due(), None);
    // The deferred send restarted the interval.
    assert!(!l.allow(ms(900)));
    assert!(l.allow(ms(1000)));
    assert!(!l.due(ms(5000)));
}

#[test]
fn keyframe_seen_clears_the_deferred_request() {
    let t0 = Instant::now();
    let mut l = KeyframeLimiter::new(Duration::from_millis(500));
    assert!(l.allow(t0));
    assert!(!l.allow(t0 + Duration::from_millis(10)));
    l.keyframe_seen();
    assert!(!l.due(t0 + Duration::from_secs(1)));
}

#[test]
fn zero_interval_never_defers() {
    let t0 = Instant::now();
    let mut l = KeyframeLimiter::new(Duration::ZERO);
    assert!(l.allow(t0));
    assert!(l.allow(t0));
    assert!(!l.due(t0));
}
