//! Who is speaking, from RFC 6464 audio levels.
//!
//! Three answers come out of the same table: the active speaker (whose video the programme
//! feed shows), the loudest few (whose audio fills a subscriber's audio slots) and a recency
//! ranking (whose video last-N keeps). Only packets that carry speech (level above the
//! silence threshold and not marked unvoiced) create or update an entry, so a room full of
//! muted microphones costs nothing and can never produce a speaker.
//!
//! Speech is scored per bucket (a tenth of the window) as the loudest level heard in it; the
//! window's sum is the score. To take over, a challenger must have been speaking for
//! `min_speech` without a pause longer than `speech_gap` (a cough is too short) and must
//! out-score the current speaker by `switch_margin_pct`, so two people talking over each
//! other do not make the feed flap. A speaker who stops decays out of the window, which is
//! what lets the next one in within about a second.

use std::collections::HashMap;
use std::time::{Duration, Instant};

const BUCKETS: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpeakerConfig {
    /// Span over which loudness is compared.
    pub window: Duration,
    /// No new speaker this soon after the last switch.
    pub min_hold: Duration,
    /// Levels at or above this (in -dBov, 127 = silence) count as silence.
    pub silence_level: u8,
    /// Continuous speech needed to become speaker; longer than a cough.
    pub min_speech: Duration,
    /// A pause longer than this ends a run of speech.
    pub speech_gap: Duration,
    /// A challenger's score must beat the speaker's by this many percent.
    pub switch_margin_pct: u32,
    /// Table bound; speech from further participants is ignored until some are removed.
    pub max_participants: usize,
}

impl Default for SpeakerConfig {
    fn default() -> Self {
        SpeakerConfig {
            window: Duration::from_secs(1),
            min_hold: Duration::from_secs(1),
            silence_level: 60,
            min_speech: Duration::from_millis(400),
            speech_gap: Duration::from_millis(300),
            switch_margin_pct: 20,
            max_participants: 10_000,
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    id: u64,
    /// Absolute index of the newest bucket written.
    head: u64,
    /// Loudest level per bucket, as dB above the silence threshold (0 = no speech).
    loud: [u8; BUCKETS],
    run_start: Instant,
    last_voiced: Instant,
    /// Last speech heard while the run was long enough to count.
    last_spoke: Option<Instant>,
}

impl Entry {
    fn score(&self, bucket: u64) -> u32 {
        let b = bucket.max(self.head);
        let oldest = b.saturating_sub(BUCKETS as u64 - 1);
        if self.head < oldest {
            return 0;
        }
        (oldest..=self.head)
            .map(|k| u32::from(self.loud[(k % BUCKETS as u64) as usize]))
            .sum()
    }
}

/// Active speaker detection and speech ranking for one room.
#[derive(Debug, Clone)]
pub struct SpeakerDetector {
    config: SpeakerConfig,
    bucket_len: Duration,
    epoch: Option<Instant>,
    entries: Vec<Entry>,
    index: HashMap<u64, usize>,
    active: Option<u64>,
    switched_at: Option<Instant>,
    /// The active speaker was removed; the next tick reports the replacement.
    dirty: bool,
}

impl SpeakerDetector {
    pub fn new(config: SpeakerConfig) -> SpeakerDetector {
        let bucket_len = (config.window / BUCKETS as u32).max(Duration::from_millis(1));
        SpeakerDetector {
            config,
            bucket_len,
            epoch: None,
            entries: Vec::new(),
            index: HashMap::new(),
            active: None,
            switched_at: None,
            dirty: false,
        }
    }

    fn bucket(&self, now: Instant) -> u64 {
        let Some(epoch) = self.epoch else {
            return 0;
        };
        let n = now.saturating_duration_since(epoch).as_nanos() / self.bucket_len.as_nanos();
        u64::try_from(n).unwrap_or(u64::MAX)
    }

    /// Still talking, and for long enough not to be a cough.
    fn sustained(&self, e: &Entry, now: Instant) -> bool {
        self.speaking(e, now)
            && e.last_voiced.saturating_duration_since(e.run_start) >= self.config.min_speech
    }

    fn speaking(&self, e: &Entry, now: Instant) -> bool {
        now.saturating_duration_since(e.last_voiced) <= self.config.speech_gap
    }

    /// One audio packet's level (RFC 6464: 0 = loudest, 127 = silence) and voice flag.
    /// Allocates only when a participant first speaks (its table entry).
    pub fn on_level(&mut self, now: Instant, participant: u64, level: u8, voice: Option<bool>) {
        let level = level.min(127);
        if voice == Some(false) || level >= self.config.silence_level {
            return;
        }
        let loud = self.config.silence_level - level;
        self.epoch.get_or_insert(now);
        let b = self.bucket(now);
        let i = match self.index.get(&participant) {
            Some(&i) => i,
            None => {
                if self.entries.len() >= self.config.max_participants {
                    return;
                }
                self.index.insert(participant, self.entries.len());
                self.entries.push(Entry {
                    id: participant,
                    head: b,
                    loud: [0; BUCKETS],
                    run_start: now,
                    last_voiced: now,
                    last_spoke: None,
                });
                self.entries.len() - 1
            }
        };
        let (gap, min_speech) = (self.config.speech_gap, self.config.min_speech);
        let Some(e) = self.entries.get_mut(i) else {
            return;
        };
        if b > e.head {
            let stale = (b - e.head).min(BUCKETS as u64);
            for k in 0..stale {
                e.loud[((b - k) % BUCKETS as u64) as usize] = 0;
            }
            e.head = b;
        }
        let slot = &mut e.loud[(e.head % BUCKETS as u64) as usize];
        *slot = (*slot).max(loud);
        if now.saturating_duration_since(e.last_voiced) > gap {
            e.run_start = now;
        }
        e.last_voiced = e.last_voiced.max(now);
        if e.last_voiced.saturating_duration_since(e.run_start) >= min_speech {
            e.last_spoke = Some(e.last_voiced);
        }
    }

    /// Re-elects the active speaker; `Some` when it changed (`Some(None)`: nobody, after the
    /// speaker was removed and nobody else qualifies).
    pub fn tick(&mut self, now: Instant) -> Option<Option<u64>> {
        let b = self.bucket(now);
        // Highest score wins; a tie keeps the current speaker, then the lower id.
        let mut best: Option<(u32, bool, u64)> = None;
        for e in &self.entries {
            if !self.sustained(e, now) {
                continue;
            }
            let key = (e.score(b), Some(e.id) == self.active, !e.id);
            if best.is_none_or(|k| key > k) {
                best = Some(key);
            }
        }
        let best = best.map(|(score, _, id)| (score, !id));
        if std::mem::take(&mut self.dirty) {
            return Some(self.switch(now, best.map(|(_, id)| id)));
        }
        let (score, challenger) = best?;
        let Some(active) = self.active else {
            return Some(self.switch(now, Some(challenger)));
        };
        if challenger == active {
            return None;
        }
        let held = self
            .switched_at
            .is_some_and(|t| now.saturating_duration_since(t) < self.config.min_hold);
        if held {
            return None;
        }
        let active_score = self
            .index
            .get(&active)
            .and_then(|&i| self.entries.get(i))
            .map_or(0, |e| e.score(b));
        let margin = 100 + u64::from(self.config.switch_margin_pct);
        if u64::from(score) * 100 > u64::from(active_score) * margin {
            return Some(self.switch(now, Some(challenger)));
        }
        None
    }

    fn switch(&mut self, now: Instant, to: Option<u64>) -> Option<u64> {
        self.active = to;
        self.switched_at = Some(now);
        to
    }

    pub fn active(&self) -> Option<u64> {
        self.active
    }

    /// The `k` loudest participants speaking now, loudest first, into `out` (cleared first).
    /// A cough counts here: it is heard in the room, it just does not move the video.
    pub fn loudest(&self, now: Instant, k: usize, out: &mut Vec<u64>) {
        out.clear();
        let b = self.bucket(now);
        // Repeated selection below the previous pick: k is small and this needs no scratch.
        // Order is (score desc, id asc), encoded as (score, !id) descending.
        let mut prev: Option<(u32, u64)> = None;
        for _ in 0..k {
            let mut pick: Option<(u32, u64)> = None;
            for e in &self.entries {
                if !self.speaking(e, now) {
                    continue;
                }
                let key = (e.score(b), !e.id);
                if key.0 == 0 || prev.is_some_and(|p| key >= p) {
                    continue;
                }
                if pick.is_none_or(|p| key > p) {
                    pick = Some(key);
                }
            }
            let Some(p) = pick else { break };
            out.push(!p.1);
            prev = Some(p);
        }
    }

    /// Participants who have spoken (long enough to count), most recent first, into `out`.
    pub fn ranking(&self, out: &mut Vec<u64>) {
        out.clear();
        out.extend(
            self.entries
                .iter()
                .filter(|e| e.last_spoke.is_some())
                .map(|e| e.id),
        );
        let spoke = |id: &u64| {
            self.index
                .get(id)
                .and_then(|&i| self.entries.get(i))
                .and_then(|e| e.last_spoke)
        };
        out.sort_unstable_by(|a, b| spoke(b).cmp(&spoke(a)).then(a.cmp(b)));
    }

    /// Forgets a participant (left the room). If it was the speaker, the next tick replaces it.
    pub fn remove(&mut self, participant: u64) {
        if let Some(i) = self.index.remove(&participant) {
            self.entries.swap_remove(i);
            if let Some(moved) = self.entries.get(i) {
                self.index.insert(moved.id, i);
            }
        }
        if self.active == Some(participant) {
            self.active = None;
            self.dirty = true;
        }
    }

    /// Participants currently in the table.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Whose video to forward under last-N: `keep` first in its order (the active speaker, then
/// whoever shares a screen, so an assembly's presenter is never cut), then the most recent
/// speakers, then the remaining `candidates` (participants with video) in their order;
/// at most `n`, only candidates, no duplicates. `out` is cleared first.
pub fn last_n(ranking: &[u64], candidates: &[u64], n: usize, keep: &[u64], out: &mut Vec<u64>) {
    out.clear();
    let push = |id: u64, out: &mut Vec<u64>| {
        if out.len() < n && candidates.contains(&id) && !out.contains(&id) {
            out.push(id);
        }
    };
    for &id in keep.iter().chain(ranking).chain(candidates) {
        if out.len() >= n {
            break;
        }
        push(id, out);
    }
}
