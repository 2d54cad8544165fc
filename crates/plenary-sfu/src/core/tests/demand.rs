use crate::core::demand::{wanted_mask, Demand, LayerChange};

fn ch(track: u64, layer: u8, wanted: bool) -> LayerChange {
    LayerChange {
        track,
        layer,
        wanted,
    }
}

#[test]
fn edges_only() {
    let mut d = Demand::new();
    let mut c = Vec::new();
    d.set(1, 10, Some(2), &mut c);
    assert_eq!(c, vec![ch(10, 2, true)]);
    c.clear();
    d.set(2, 10, Some(2), &mut c);
    d.set(2, 10, Some(2), &mut c);
    assert!(c.is_empty());
    assert_eq!(d.viewers(10, 2), 2);
    assert_eq!(d.wanted_layers(10), [false, false, true]);
    d.set(1, 10, None, &mut c);
    assert!(c.is_empty());
    d.set(2, 10, Some(0), &mut c);
    // New layer first, so the publisher never stops before the replacement runs.
    assert_eq!(c, vec![ch(10, 0, true), ch(10, 2, false)]);
    assert_eq!(d.wanted_layers(10), [true, false, false]);
    assert_eq!(d.wanted_layers(99), [false; 3]);
}

#[test]
fn holding_two_layers_during_a_switch() {
    let mut d = Demand::new();
    let mut c = Vec::new();
    d.set(1, 10, Some(0), &mut c);
    c.clear();
    d.set_layers(1, 10, 0b011, &mut c);
    assert_eq!(c, vec![ch(10, 1, true)]);
    c.clear();
    d.set(1, 10, Some(1), &mut c);
    assert_eq!(c, vec![ch(10, 0, false)]);
    // Out-of-range bits and layers are clamped, not lost.
    c.clear();
    d.set_layers(1, 10, 0xf0 | 0b010, &mut c);
    assert!(c.is_empty());
    d.set(1, 10, Some(7), &mut c);
    assert_eq!(c, vec![ch(10, 2, true), ch(10, 1, false)]);
}

#[test]
fn subscriber_leaves() {
    let mut d = Demand::new();
    let mut c = Vec::new();
    d.set(1, 10, Some(1), &mut c);
    d.set(1, 11, Some(0), &mut c);
    d.set(2, 10, Some(1), &mut c);
    c.clear();
    d.remove_subscriber(1, &mut c);
    assert_eq!(c, vec![ch(11, 0, false)]);
    c.clear();
    d.remove_subscriber(1, &mut c);
    d.remove_subscriber(3, &mut c);
    assert!(c.is_empty());
    assert_eq!(d.viewers(10, 1), 1);
}

#[test]
fn track_removed() {
    let mut d = Demand::new();
    let mut c = Vec::new();
    d.set(1, 10, Some(1), &mut c);
    d.set(2, 10, Some(2), &mut c);
    d.set(2, 11, Some(2), &mut c);
    c.clear();
    d.remove_track(10);
    assert_eq!(d.wanted_layers(10), [false; 3]);
    // Leaving later reports nothing for the gone track, and the other track still counts.
    d.remove_subscriber(1, &mut c);
    assert!(c.is_empty());
    d.remove_subscriber(2, &mut c);
    assert_eq!(c, vec![ch(11, 2, false)]);
    // A republished track with the same id starts from zero.
    c.clear();
    d.set(1, 10, Some(0), &mut c);
    assert_eq!(c, vec![ch(10, 0, true)]);
}

#[test]
fn a_preferred_layer_not_yet_measured_is_asked_for_so_it_can_be() {
    // The soak's deadlock: the presenter's middle layer arrived first, the first listener
    // was bound to it, and asking for it alone paused the top layer before its first packet.
    let only_middle = [false, true, false];
    assert_eq!(wanted_mask(Some(1), 2, 3, only_middle), 0b110);
    // Once the top layer has been measured, a listener held below it by its estimate does not
    // keep it running: its rate is known and the selector asks for it when it fits.
    assert_eq!(wanted_mask(Some(1), 2, 3, [true, true, true]), 0b010);
    assert_eq!(wanted_mask(Some(0), 2, 3, [true, false, true]), 0b011);
    // Nothing above the preference, and nothing above what the publisher declared.
    assert_eq!(wanted_mask(Some(0), 1, 3, [true, false, false]), 0b011);
    assert_eq!(wanted_mask(Some(0), 2, 2, [true, false, false]), 0b011);
    assert_eq!(wanted_mask(Some(0), 2, 1, [true, false, false]), 0b001);
}

#[test]
fn a_fallback_above_the_preference_also_asks_for_the_preference() {
    // Only the top layer measured yet: forwarded, and the preferred low layer asked for too.
    assert_eq!(wanted_mask(Some(2), 0, 3, [false, false, true]), 0b101);
    assert_eq!(wanted_mask(Some(2), 0, 3, [true, false, true]), 0b101);
    assert_eq!(wanted_mask(Some(2), 2, 3, [false, false, true]), 0b100);
    assert_eq!(wanted_mask(None, 2, 3, [false; 3]), 0);
}
