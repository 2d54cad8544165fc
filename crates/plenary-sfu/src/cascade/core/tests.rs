use super::*;

fn packet(ssrc: u32, seq: u64, len: usize) -> Packet {
    Packet {
        ssrc,
        pt: 96.into(),
        seq,
        ts: 0,
        marker: false,
        payload: Arc::from(vec![0u8; len]),
        received: Instant::now(),
        audio_level: None,
        voice_activity: None,
        video_orientation: None,
    }
}

fn track_up(id: u64, owner: u64, kind: MediaKind) -> PipeMsg {
    PipeMsg::TrackUp(TrackUp {
        room: "r".into(),
        id,
        owner,
        mid: Mid::from("0"),
        kind,
        source: TrackSource::Camera,
        codec: Codec::Vp8,
        rids: vec![Rid::from("q"), Rid::from("h"), Rid::from("f")],
    })
}

fn controls(out: &[Action]) -> Vec<ControlMsg> {
    out.iter()
        .filter_map(|a| match a {
            Action::Control(c) => Some(c.clone()),
            _ => None,
        })
        .collect()
}

fn media_count(out: &[Action]) -> usize {
    out.iter()
        .filter(|a| matches!(a, Action::Media { .. }))
        .count()
}

/// Our track id 0x105 lives on worker 5; the link is slot 0.
const OUR_TRACK: u64 = (1 << 8) | 5;

#[test]
fn video_crosses_only_in_the_layers_the_far_side_demands() {
    let mut core = LinkCore::new(0);
    let mut out = Vec::new();
    core.on_worker_msg(
        track_up(OUR_TRACK, (2 << 8) | 5, MediaKind::Video),
        &mut out,
    );
    assert!(matches!(
        controls(&out)[..],
        [ControlMsg::TrackUp { id: OUR_TRACK, .. }]
    ));
    out.clear();
    let media = |layer: usize| PipeMsg::Media {
        track: OUR_TRACK,
        layer,
        codec: Codec::Vp8,
        packet: packet(100 + layer as u32, 1, 1000),
    };
    for l in 0..3 {
        core.on_worker_msg(media(l), &mut out);
    }
    assert_eq!(media_count(&out), 0, "nobody on the far side watches yet");
    core.on_control(
        ControlMsg::Demand {
            track: OUR_TRACK,
            layers: 0b001,
        },
        &mut out,
    );
    // The demand reaches the track's worker as a pseudo worker's.
    assert!(out.iter().any(|a| matches!(
        a,
        Action::Workers(m, PipeMsg::Demand { track: OUR_TRACK, from, layers: 1 })
            if *m == 1 << 5 && *from == LINK_BASE
    )));
    out.clear();
    for l in 0..3 {
        core.on_worker_msg(media(l), &mut out);
    }
    assert_eq!(media_count(&out), 1);
    assert!(matches!(out[0], Action::Media { layer: 0, .. }));
    // Layers kept off the link are still described.
    out.clear();
    core.tick(Instant::now(), &mut out);
    let infos: Vec<u8> = controls(&out)
        .iter()
        .filter_map(|c| match c {
            ControlMsg::LayerInfo { layer, bps, .. } if *bps > 0 => Some(*layer),
            _ => None,
        })
        .collect();
    assert_eq!(infos.len(), 3, "{infos:?}");
}

#[test]
fn audio_always_crosses() {
    let mut core = LinkCore::new(0);
    let mut out = Vec::new();
    core.on_worker_msg(
        track_up(OUR_TRACK, (2 << 8) | 5, MediaKind::Audio),
        &mut out,
    );
    out.clear();
    core.on_worker_msg(
        PipeMsg::Media {
            track: OUR_TRACK,
            layer: 0,
            codec: Codec::Opus,
            packet: packet(7, 1, 60),
        },
        &mut out,
    );
    assert_eq!(media_count(&out), 1);
}

#[test]
fn remote_ids_map_to_the_links_pseudo_worker_and_back() {
    let mut core = LinkCore::new(3);
    let pseudo = LINK_BASE + 3;
    let mut out = Vec::new();
    // A local worker enters the room first: the far side's entries go to it as they come.
    core.on_worker_msg(
        PipeMsg::Synced {
            room: "r".into(),
            from: 1,
        },
        &mut out,
    );
    assert!(matches!(controls(&out)[..], [ControlMsg::Synced { .. }]));
    out.clear();
    core.on_control(
        ControlMsg::ParticipantUp {
            room: "r".into(),
            id: 0x201,
            name: "ann".into(),
            visible: true,
        },
        &mut out,
    );
    let local_p = (0x201 << 8) | pseudo as u64;
    assert!(matches!(
        &out[..],
        [Action::Workers(2, PipeMsg::ParticipantUp { id, .. })] if *id == local_p
    ));
    assert_eq!(worker_of(local_p), pseudo);
    out.clear();
    core.on_control(
        ControlMsg::TrackUp {
            room: "r".into(),
            id: 0x301,
            owner: 0x201,
            mid: "0".into(),
            kind: Kind::Video,
            source: "camera".into(),
            codec: "vp8".into(),
            rids: vec![],
        },
        &mut out,
    );
    let local_t = (0x301 << 8) | pseudo as u64;
    out.clear();
    // Demand from two local workers is merged; only a change goes out.
    let demand = |from, layers| PipeMsg::Demand {
        track: local_t,
        from,
        layers,
    };
    core.on_worker_msg(demand(0, 0b001), &mut out);
    core.on_worker_msg(demand(1, 0b100), &mut out);
    core.on_worker_msg(demand(1, 0b100), &mut out);
    core.on_worker_msg(demand(0, 0), &mut out);
    let sent: Vec<u8> = controls(&out)
        .iter()
        .filter_map(|c| match c {
            ControlMsg::Demand {
                track: 0x301,
                layers,
            } => Some(*layers),
            _ => None,
        })
        .collect();
    assert_eq!(sent, vec![0b001, 0b101, 0b100]);
    out.clear();
    core.on_worker_msg(
        PipeMsg::Keyframe {
            track: local_t,
            layer: 2,
        },
        &mut out,
    );
    assert_eq!(
        controls(&out),
        vec![ControlMsg::Keyframe {
            track: 0x301,
            layer: 2
        }]
    );
    // A datagram of the track reaches the room's workers under the local id.
    let dg = MediaPacket {
        track: 0x301,
        layer: 0,
        ssrc: 9,
        pt: 96,
        seq: 65535,
        ts: 0,
        marker: true,
        audio_level: None,
        voice_activity: None,
        video_orientation: None,
        payload: &[1, 2, 3],
    };
    let (mask, msg) = core.on_datagram(&dg, Instant::now(), &mut out).unwrap();
    assert_eq!(mask, 0b10);
    let PipeMsg::Media { track, packet, .. } = msg else {
        panic!("not media")
    };
    assert_eq!(track, local_t);
    let first = packet.seq;
    let (_, msg) = core
        .on_datagram(
            &MediaPacket {
                seq: 0,
                ..dg.clone()
            },
            Instant::now(),
            &mut out,
        )
        .unwrap();
    let PipeMsg::Media { packet, .. } = msg else {
        panic!("not media")
    };
    assert_eq!(packet.seq, first + 1, "the 16-bit wrap is unwrapped");
    // Unknown flows are counted, not forwarded.
    assert!(core
        .on_datagram(
            &MediaPacket { track: 0x999, ..dg },
            Instant::now(),
            &mut out
        )
        .is_none());
    assert_eq!(core.unknown_flows, 1);
}

#[test]
fn a_worker_entering_late_gets_the_mirror_replayed() {
    let mut core = LinkCore::new(0);
    let mut out = Vec::new();
    core.on_control(
        ControlMsg::ParticipantUp {
            room: "r".into(),
            id: 0x201,
            name: "ann".into(),
            visible: true,
        },
        &mut out,
    );
    core.on_control(ControlMsg::Synced { room: "r".into() }, &mut out);
    out.clear();
    core.on_worker_msg(
        PipeMsg::Synced {
            room: "r".into(),
            from: 0,
        },
        &mut out,
    );
    let to_worker: Vec<&PipeMsg> = out
        .iter()
        .filter_map(|a| match a {
            Action::Workers(1, m) => Some(m),
            _ => None,
        })
        .collect();
    assert!(matches!(to_worker[0], PipeMsg::ParticipantUp { .. }));
    assert!(
        matches!(to_worker[1], PipeMsg::Synced { from, .. } if *from == LINK_BASE),
        "the join waiting on the link is released"
    );
    // The far side's participant leaves: the worker is told under the local id.
    out.clear();
    core.on_control(ControlMsg::ParticipantDown { id: 0x201 }, &mut out);
    assert!(matches!(
        &out[..],
        [Action::Workers(1, PipeMsg::ParticipantDown { id })] if *id == (0x201 << 8) | LINK_BASE as u64
    ));
}

#[test]
fn entries_of_other_links_are_not_sent_on() {
    // A track that came over another link (pseudo worker LINK_BASE + 1) is never re-piped:
    // with a full mesh, every track crosses each link at most once.
    let mut core = LinkCore::new(0);
    let mut out = Vec::new();
    let foreign = (5 << 8) | (LINK_BASE as u64 + 1);
    core.on_worker_msg(track_up(foreign, foreign, MediaKind::Audio), &mut out);
    core.on_worker_msg(PipeMsg::ParticipantDown { id: foreign }, &mut out);
    assert!(out.is_empty());
}

#[test]
fn sequence_numbers_unwrap_forward_and_tolerate_reordering() {
    let mut last = None;
    let a = unwrap_seq(&mut last, 65534);
    let b = unwrap_seq(&mut last, 65535);
    let c = unwrap_seq(&mut last, 1);
    let d = unwrap_seq(&mut last, 0);
    assert_eq!((b - a, c - b, c - d), (1, 2, 1));
}

/// Carries what one core sent to the other: control messages and encoded media.
fn deliver(from: &mut Vec<Action>, to: &mut LinkCore, drop_seq: Option<u64>) -> Vec<Action> {
    let mut back = Vec::new();
    for a in from.drain(..) {
        match a {
            Action::Control(c) => to.on_control(c, &mut back),
            Action::Media {
                track,
                layer,
                packet,
            } if Some(packet.seq) != drop_seq => {
                let p = wire_packet(track, layer, &packet);
                if let Some((_, msg)) = to.on_datagram(&p, Instant::now(), &mut back) {
                    back.push(Action::Workers(0, msg));
                }
            }
            _ => {}
        }
    }
    back
}

fn delivered_seqs(actions: &[Action]) -> Vec<u16> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Workers(_, PipeMsg::Media { packet, .. }) => Some(packet.seq as u16),
            _ => None,
        })
        .collect()
}

#[test]
fn a_video_packet_lost_on_the_link_is_asked_for_and_sent_again() {
    let mut owner = LinkCore::new(0);
    let mut far = LinkCore::new(0);
    let mut out = Vec::new();
    owner.on_worker_msg(
        track_up(OUR_TRACK, (2 << 8) | 5, MediaKind::Video),
        &mut out,
    );
    // The far side learns the track, and one of its workers watches layer 0.
    let mut back = deliver(&mut out, &mut far, None);
    let far_track = far.local_id(OUR_TRACK);
    far.on_worker_msg(
        PipeMsg::Demand {
            track: far_track,
            from: 1,
            layers: 1,
        },
        &mut back,
    );
    let mut to_owner = std::mem::take(&mut back);
    let told = deliver(&mut to_owner, &mut owner, None);
    assert!(
        matches!(
            told[..],
            [Action::Workers(_, PipeMsg::Demand { layers: 1, .. })]
        ),
        "the owner's worker hears the demand"
    );

    let send = |owner: &mut LinkCore, seq: u64, out: &mut Vec<Action>| {
        owner.on_worker_msg(
            PipeMsg::Media {
                track: OUR_TRACK,
                layer: 0,
                codec: Codec::Vp8,
                packet: packet(7, seq, 900),
            },
            out,
        )
    };
    for seq in 100..=102 {
        send(&mut owner, seq, &mut out);
    }
    // 101 is lost on the link: the far side sees the hole at 102 and asks for it.
    let mut back = deliver(&mut out, &mut far, Some(101));
    assert_eq!(delivered_seqs(&back), [100, 102]);
    let nacks = controls(&back);
    assert_eq!(
        nacks,
        [ControlMsg::Nack {
            track: OUR_TRACK,
            layer: 0,
            seqs: vec![101]
        }]
    );
    assert_eq!(far.repair.nacked, 1);
    let mut resent = deliver(&mut back, &mut owner, None);
    assert_eq!(owner.repair.resent, 1);
    assert_eq!(media_count(&resent), 1);
    // The repair reaches the far side's workers, late but whole, and asks for nothing more.
    let repaired = deliver(&mut resent, &mut far, None);
    assert_eq!(delivered_seqs(&repaired), [101]);
    assert!(controls(&repaired).is_empty());

    // A packet the owner no longer keeps (or never sent) is counted, not invented.
    owner.on_control(
        ControlMsg::Nack {
            track: OUR_TRACK,
            layer: 0,
            seqs: vec![5],
        },
        &mut out,
    );
    assert_eq!(media_count(&out), 0);
    assert_eq!(owner.repair.missed, 1);
}

#[test]
fn audio_holes_are_not_asked_for() {
    let mut owner = LinkCore::new(0);
    let mut far = LinkCore::new(0);
    let mut out = Vec::new();
    owner.on_worker_msg(
        track_up(OUR_TRACK, (2 << 8) | 5, MediaKind::Audio),
        &mut out,
    );
    deliver(&mut out, &mut far, None);
    for seq in [10, 12] {
        owner.on_worker_msg(
            PipeMsg::Media {
                track: OUR_TRACK,
                layer: 0,
                codec: Codec::Opus,
                packet: packet(3, seq, 80),
            },
            &mut out,
        );
    }
    let back = deliver(&mut out, &mut far, None);
    assert_eq!(delivered_seqs(&back), [10, 12]);
    assert!(controls(&back).is_empty(), "{:?}", controls(&back));
}
