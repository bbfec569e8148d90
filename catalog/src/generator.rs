//! Relations fed by a built-in generator (`connector='nexmark'` or
//! `'datagen'`) instead of a Kafka topic.
//!
//! A generator is deterministic: row `n` follows from the seed and `n`
//! alone. Its position (the next event number) is committed with the views
//! it feeds, exactly as Kafka offsets are, so it is exactly-once too. Its
//! rows are stored like a Kafka relation's, keyed the same way.

use serde::{Deserialize, Serialize};

use crate::kafka::SourceKind;

/// What a generator makes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "connector", rename_all = "snake_case")]
pub enum Connector {
    /// One kind of Nexmark event, taken from the shared event sequence (so
    /// `person`, `auction` and `bid` streams with the same seed, start and
    /// rate agree with each other). `columns` maps each declared column to
    /// the standard column it reads.
    Nexmark {
        event_type: NexmarkEvent,
        columns: Vec<usize>,
    },
    /// Rows for any declared columns, one [`FieldSpec`] per column.
    Datagen { fields: Vec<FieldSpec> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NexmarkEvent {
    Person,
    Auction,
    Bid,
}

impl NexmarkEvent {
    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "person" => Some(NexmarkEvent::Person),
            "auction" => Some(NexmarkEvent::Auction),
            "bid" => Some(NexmarkEvent::Bid),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            NexmarkEvent::Person => "person",
            NexmarkEvent::Auction => "auction",
            NexmarkEvent::Bid => "bid",
        }
    }
}

/// How datagen fills one column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FieldSpec {
    /// `start + n` for row `n`; the relation ends after `end`, if given.
    Sequence { start: i64, end: Option<i64> },
    /// Uniform in `[min, max]` for numbers, `length` characters for text.
    Random { min: f64, max: f64, length: usize },
    /// Event time: the start time plus `n` intervals of the row rate.
    EventTime,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GeneratorDef {
    /// A stream gains a row per event; a datagen table upserts by key.
    pub kind: SourceKind,
    pub connector: Connector,
    /// Events (Nexmark: of every kind) or rows made per second of wall
    /// time; 0 makes them as fast as the runtime takes them.
    pub events_per_second: u64,
    /// The event (or row) number the relation ends at, if it ends.
    pub max_events: Option<u64>,
    pub seed: u64,
    /// Event time of event 0, in microseconds since the epoch.
    pub start_time_us: i64,
}

impl GeneratorDef {
    /// Events per second of event time: the wall rate, or for an
    /// unthrottled generator Nexmark's default of 10,000.
    pub fn event_time_rate(&self) -> u64 {
        if self.events_per_second == 0 {
            DEFAULT_EVENT_TIME_RATE
        } else {
            self.events_per_second
        }
    }

    /// Event time of event `n`, in microseconds since the epoch.
    pub fn event_time_us(&self, n: u64) -> i64 {
        event_time_us(self.start_time_us, self.event_time_rate(), n)
    }

    /// The connector's name, as in `WITH (connector=...)`.
    pub fn connector_name(&self) -> &'static str {
        match self.connector {
            Connector::Nexmark { .. } => "nexmark",
            Connector::Datagen { .. } => "datagen",
        }
    }

    /// What SHOW STREAMS prints where a Kafka relation has its topic.
    pub fn label(&self) -> String {
        match &self.connector {
            Connector::Nexmark { event_type, .. } => format!("nexmark:{}", event_type.as_str()),
            Connector::Datagen { .. } => "datagen".into(),
        }
    }
}

/// Event time of event `n` of a generator starting at `start_us` and making
/// `rate` (> 0) events per second of event time.
pub fn event_time_us(start_us: i64, rate: u64, n: u64) -> i64 {
    let offset = (n as u128 * 1_000_000 / rate.max(1) as u128) as i64;
    start_us.saturating_add(offset)
}

/// Nexmark's default event rate, which spaces event time when no rate is set.
pub const DEFAULT_EVENT_TIME_RATE: u64 = 10_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_time_follows_the_rate() {
        let def = GeneratorDef {
            kind: SourceKind::Stream,
            connector: Connector::Datagen { fields: vec![] },
            events_per_second: 0,
            max_events: None,
            seed: 0,
            start_time_us: 1_000,
        };
        assert_eq!(def.event_time_us(0), 1_000);
        assert_eq!(def.event_time_us(10_000), 1_000 + 1_000_000);
        let throttled = GeneratorDef {
            events_per_second: 4,
            ..def
        };
        assert_eq!(throttled.event_time_us(3), 1_000 + 750_000);
    }
}
