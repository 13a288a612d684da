//! The audit-trail index: for each actor, stream, entity and event type, the positions of its
//! events in order, and every position's time. A filtered page seeks through these posting
//! lists (a leapfrog intersection) instead of scanning the log, so its cost follows the
//! page, not the ledger's size.
//!
//! Positions are appended in order, so every list is sorted; the writer never lets a time go
//! backwards, so times are sorted too and a time range is a position range.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::log::envelope::Unsigned;

#[derive(Debug, Default)]
pub struct AuditIndex {
    /// `recorded_at` of each position, in microseconds since the epoch.
    times: Vec<i64>,
    /// The last time indexed, as text and as `times` holds it.
    last_time: (String, i64),
    actors: HashMap<String, Vec<u64>>,
    streams: HashMap<String, Vec<u64>>,
    entities: HashMap<String, Vec<u64>>,
    types: HashMap<String, Vec<u64>>,
}

/// What an audit-trail query selects; every given condition must hold.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub actor: Option<String>,
    pub stream: Option<String>,
    /// An id an event names: the id in its stream's name, or a `*_id` field of its payload.
    pub entity_id: Option<String>,
    /// Any of these types (none: every type).
    pub event_types: Vec<String>,
    /// Recorded at or after.
    pub from: Option<DateTime<Utc>>,
    /// Recorded at or before.
    pub to: Option<DateTime<Utc>>,
    /// Positions `position_from..=position_to`.
    pub position_from: Option<u64>,
    pub position_to: Option<u64>,
}

/// One page of matching positions, and whether more match after it.
#[derive(Debug, PartialEq)]
pub struct Page {
    pub positions: Vec<u64>,
    pub more: bool,
}

/// A sorted position list, or the union of several (event types).
enum Source<'a> {
    One(&'a [u64]),
    Any(Vec<&'a [u64]>),
}

impl Source<'_> {
    /// The first position at or after `at`.
    fn seek(&self, at: u64) -> Option<u64> {
        let first = |list: &[u64]| list.get(list.partition_point(|p| *p < at)).copied();
        match self {
            Source::One(list) => first(list),
            Source::Any(lists) => lists.iter().filter_map(|l| first(l)).min(),
        }
    }
}

impl AuditIndex {
    /// The number of positions indexed.
    pub fn size(&self) -> u64 {
        self.times.len() as u64
    }

    /// Indexes the next event; events must come in position order.
    pub fn add(&mut self, e: &Unsigned) {
        // A stored payload is valid JSON, so reading its ids cannot fail.
        let ids = entity_ids(&e.stream, &e.payload).unwrap_or_default();
        self.push(
            e.position,
            &e.actor,
            &e.stream,
            &e.event_type,
            &e.recorded_at,
            ids,
        );
    }

    /// Indexes the next event from its parts; `ids` from `entity_ids`.
    pub fn push(
        &mut self,
        position: u64,
        actor: &str,
        stream: &str,
        event_type: &str,
        recorded_at: &str,
        ids: Vec<String>,
    ) {
        debug_assert_eq!(position, self.size());
        // The events of one commit share their time: parse it once.
        if recorded_at != self.last_time.0 {
            let micros = DateTime::parse_from_rfc3339(recorded_at)
                .map(|t| t.timestamp_micros())
                .unwrap_or(self.last_time.1);
            self.last_time = (recorded_at.to_string(), micros);
        }
        self.times.push(self.last_time.1);
        push(&mut self.actors, actor, position);
        push(&mut self.streams, stream, position);
        push(&mut self.types, event_type, position);
        for id in ids {
            self.entities.entry(id).or_default().push(position);
        }
    }

    /// Up to `first` positions matching `f`, after `after` (exclusive), in position order.
    pub fn page(&self, f: &Filter, after: Option<u64>, first: usize) -> Page {
        let none = Page {
            positions: Vec::new(),
            more: false,
        };
        let (lo, hi) = self.bounds(f);
        let lo = match after {
            Some(a) => lo.max(a.saturating_add(1)),
            None => lo,
        };
        let mut sources = Vec::new();
        let lists = [
            (&self.actors, &f.actor),
            (&self.streams, &f.stream),
            (&self.entities, &f.entity_id),
        ];
        for (map, key) in lists {
            if let Some(key) = key {
                match map.get(key) {
                    Some(list) => sources.push(Source::One(list)),
                    None => return none,
                }
            }
        }
        if !f.event_types.is_empty() {
            let any: Vec<&[u64]> = f
                .event_types
                .iter()
                .filter_map(|t| self.types.get(t).map(Vec::as_slice))
                .collect();
            if any.is_empty() {
                return none;
            }
            sources.push(Source::Any(any));
        }
        let mut positions = Vec::with_capacity(first.min(1024));
        let mut at = lo;
        'seek: while at < hi {
            // Leapfrog: move every source to `at` or beyond until they all agree.
            for s in &sources {
                match s.seek(at) {
                    None => break 'seek,
                    Some(p) if p > at => {
                        at = p;
                        continue 'seek;
                    }
                    Some(_) => {}
                }
            }
            if positions.len() == first {
                return Page {
                    positions,
                    more: true,
                };
            }
            positions.push(at);
            at += 1;
        }
        Page {
            positions,
            more: false,
        }
    }

    /// The position range `lo..hi` the filter's positions and times allow.
    fn bounds(&self, f: &Filter) -> (u64, u64) {
        let mut lo = f.position_from.unwrap_or(0);
        let mut hi = f
            .position_to
            .map_or(self.size(), |p| p.saturating_add(1).min(self.size()));
        if let Some(t) = f.from {
            let t = t.timestamp_micros();
            lo = lo.max(self.times.partition_point(|x| *x < t) as u64);
        }
        if let Some(t) = f.to {
            let t = t.timestamp_micros();
            hi = hi.min(self.times.partition_point(|x| *x <= t) as u64);
        }
        (lo, hi)
    }
}

fn push(map: &mut HashMap<String, Vec<u64>>, key: &str, position: u64) {
    match map.get_mut(key) {
        Some(list) => list.push(position),
        None => {
            map.insert(key.to_string(), vec![position]);
        }
    }
}

/// The ids an event names, sorted and once each: the id part of its stream's name
/// (`deployment-<id>`) and the string values of `*_id` fields in its payload and the
/// payload's nested objects, read from any JSON deserializer (a stored record's raw payload
/// at replay, a decoded one when following). Arrays are not entered: they hold per-item
/// records (a run's requests, an import's artifacts) whose ids would grow the index by one
/// entry per item rather than per event. `run_id` is left out too: a run is its event,
/// found by position or by request.
pub fn entity_ids<'de, D: Deserializer<'de>>(
    stream: &str,
    payload: D,
) -> Result<Vec<String>, D::Error> {
    let mut ids = Vec::new();
    if let Some((_, id)) = stream.split_once('-') {
        ids.push(id.to_string());
    }
    Ids {
        out: &mut ids,
        capture: false,
    }
    .deserialize(payload)?;
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// Walks a JSON value, pushing the strings found under `*_id` keys.
struct Ids<'a> {
    out: &'a mut Vec<String>,
    /// Whether the value being read is under an id key.
    capture: bool,
}

impl<'de> DeserializeSeed<'de> for Ids<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

/// Reads a map key, answering whether it names an id, without keeping it.
struct IdKey;

impl<'de> DeserializeSeed<'de> for IdKey {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for IdKey {
    type Value = bool;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<bool, E> {
        Ok(key.ends_with("_id") && key != "run_id")
    }
}

impl<'de> Visitor<'de> for Ids<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("JSON")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(capture) = map.next_key_seed(IdKey)? {
            map.next_value_seed(Ids {
                out: &mut *self.out,
                capture,
            })?;
        }
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        if self.capture {
            self.out.push(v.to_string());
        }
        Ok(())
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::envelope::Digest;
    use serde_json::{Value, json};
    use uuid::Uuid;

    fn event(position: u64, actor: &str, stream: &str, kind: &str, payload: Value) -> Unsigned {
        Unsigned {
            actor: actor.into(),
            event_id: Uuid::nil(),
            event_type: kind.into(),
            key_id: String::new(),
            payload,
            position,
            prev_hash: Digest::ZERO,
            recorded_at: format!("2026-01-01T00:00:{:02}.000000Z", position),
            schema_version: 1,
            stream: stream.into(),
            stream_version: 0,
        }
    }

    /// 60 events: actors a/b alternate, types X/Y/Z rotate, streams s-1..s-4 in blocks.
    fn index() -> AuditIndex {
        let mut ix = AuditIndex::default();
        for p in 0..60 {
            let actor = if p % 2 == 0 { "a" } else { "b" };
            let kind = ["X", "Y", "Z"][(p % 3) as usize];
            let stream = format!("s-{}", p / 15 + 1);
            let payload = json!({"model_id": format!("m{}", p % 5), "spec": {"project_id": "p1"},
                "requests": [{"request_id": "r"}], "run_id": "run"});
            ix.add(&event(p, actor, &stream, kind, payload));
        }
        ix
    }

    /// What a scan of the same 60 events selects.
    fn scan(f: &Filter, after: Option<u64>) -> Vec<u64> {
        (0..60u64)
            .filter(|p| after.is_none_or(|a| *p > a))
            .filter(|p| {
                f.actor
                    .as_deref()
                    .is_none_or(|a| a == ["a", "b"][(*p % 2) as usize])
            })
            .filter(|p| {
                f.event_types.is_empty()
                    || f.event_types
                        .iter()
                        .any(|t| t == ["X", "Y", "Z"][(*p % 3) as usize])
            })
            .filter(|p| {
                f.stream
                    .as_deref()
                    .is_none_or(|s| s == format!("s-{}", p / 15 + 1))
            })
            .filter(|p| {
                f.entity_id
                    .as_deref()
                    .is_none_or(|e| e == format!("m{}", p % 5) || e == "p1")
            })
            .filter(|p| f.position_from.is_none_or(|x| *p >= x))
            .filter(|p| f.position_to.is_none_or(|x| *p <= x))
            .filter(|p| f.from.is_none_or(|t| t.timestamp() % 60 <= *p as i64))
            .filter(|p| f.to.is_none_or(|t| t.timestamp() % 60 >= *p as i64))
            .collect()
    }

    fn at(second: u32) -> Option<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(&format!("2026-01-01T00:00:{second:02}Z"))
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    #[test]
    fn pages_match_a_scan_for_every_combination() {
        let ix = index();
        let filters = [
            Filter::default(),
            Filter {
                actor: Some("a".into()),
                ..Filter::default()
            },
            Filter {
                actor: Some("b".into()),
                event_types: vec!["X".into(), "Z".into()],
                ..Filter::default()
            },
            Filter {
                stream: Some("s-2".into()),
                entity_id: Some("m3".into()),
                ..Filter::default()
            },
            Filter {
                entity_id: Some("p1".into()),
                from: at(7),
                to: at(41),
                event_types: vec!["Y".into()],
                ..Filter::default()
            },
            Filter {
                position_from: Some(10),
                position_to: Some(30),
                actor: Some("a".into()),
                ..Filter::default()
            },
        ];
        for f in &filters {
            let want = scan(f, None);
            for size in [1, 2, 7, 100] {
                let mut got: Vec<u64> = Vec::new();
                let mut after = None;
                loop {
                    let page = ix.page(f, after, size);
                    assert!(page.positions.len() <= size);
                    got.extend(&page.positions);
                    after = page.positions.last().copied().or(after);
                    if !page.more {
                        break;
                    }
                }
                assert_eq!(got, want, "{f:?} in pages of {size}");
            }
            assert_eq!(ix.page(f, Some(20), 1000).positions, scan(f, Some(20)));
        }
    }

    #[test]
    fn ids_read_alike_from_raw_json_and_from_a_value() {
        let text = r#"{"deployment_id":"d","spec":{"project_id":"p","n":1,"x":[{"model_id":"no"}]},
            "requests":[{"request_id":"r"}],"run_id":"run","ok":true,"none":null,"f":1.5,
            "nested_id":{"inner_id":"i"},"esc\u0061pe_id":"e"}"#;
        let value: Value = serde_json::from_str(text).unwrap();
        let want = vec!["1", "d", "e", "i", "p"];
        assert_eq!(entity_ids("s-1", &value).unwrap(), want);
        let mut raw = serde_json::Deserializer::from_str(text);
        assert_eq!(entity_ids("s-1", &mut raw).unwrap(), want);
    }

    #[test]
    fn unknown_keys_and_arrays_select_nothing() {
        let ix = index();
        for f in [
            Filter {
                actor: Some("nobody".into()),
                ..Filter::default()
            },
            Filter {
                event_types: vec!["Nope".into()],
                ..Filter::default()
            },
            // Ids inside arrays and run ids are not indexed.
            Filter {
                entity_id: Some("r".into()),
                ..Filter::default()
            },
            Filter {
                entity_id: Some("run".into()),
                ..Filter::default()
            },
            Filter {
                from: at(50),
                to: at(40),
                ..Filter::default()
            },
        ] {
            assert_eq!(ix.page(&f, None, 10).positions, Vec::<u64>::new(), "{f:?}");
        }
        // The stream's id part is an entity.
        assert_eq!(
            ix.page(
                &Filter {
                    entity_id: Some("4".into()),
                    ..Filter::default()
                },
                None,
                100
            )
            .positions,
            (45..60).collect::<Vec<_>>()
        );
    }
}
