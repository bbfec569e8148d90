//! The Nexmark event generator, straight into Arrow.
//!
//! It follows the model of the standard generator (Beam's and Flink's
//! `NexmarkGenerator`): one global sequence of events in which every 50
//! are 1 person, 3 auctions and 46 bids; auctions are sold by recent
//! people, bids go to recent auctions, and half the bids go to a "hot"
//! auction and three quarters come from a "hot" bidder. Event `n` depends
//! only on the seed and `n` (each field draws from its own seeded stream),
//! so a generator restarted at any position makes the same events, and a
//! column left out costs nothing.
//!
//! Column names and types are those of RisingWave's and Flink's Nexmark
//! suites, with event time in `date_time`.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Int64Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::json::LineDelimitedWriter;
use eddy_catalog::generator::{event_time_us, NexmarkEvent};
use eddy_catalog::ColumnType;

use crate::random::Rng;

pub const PERSON_PROPORTION: u64 = 1;
pub const AUCTION_PROPORTION: u64 = 3;
pub const BID_PROPORTION: u64 = 46;
pub const PROPORTION_DENOMINATOR: u64 = PERSON_PROPORTION + AUCTION_PROPORTION + BID_PROPORTION;

const FIRST_PERSON_ID: i64 = 1000;
const FIRST_AUCTION_ID: i64 = 1000;
const FIRST_CATEGORY_ID: i64 = 10;
const NUM_CATEGORIES: u64 = 5;
/// People who may sell or bid at any time, and how far past the newest
/// person (or auction) a reference may reach.
const NUM_ACTIVE_PEOPLE: u64 = 1000;
const NUM_IN_FLIGHT_AUCTIONS: u64 = 100;
const PERSON_ID_LEAD: u64 = 10;
const AUCTION_ID_LEAD: u64 = 10;
/// One in `HOT_*_RATIO` ids is hot; a bid picks a hot auction with
/// probability 1/2 and a hot bidder with 3/4, an auction a hot seller 3/4.
const HOT_AUCTION_RATIO: u64 = 100;
const HOT_BIDDER_RATIO: u64 = 100;
const HOT_SELLER_RATIO: u64 = 100;
const HOT_AUCTION_CHANCE: u64 = 2;
const HOT_BIDDER_CHANCE: u64 = 4;
const HOT_SELLER_CHANCE: u64 = 4;
const HOT_CHANNEL_CHANCE: u64 = 2;
const CHANNELS: u64 = 10_000;
const HOT_CHANNELS: [&str; 4] = ["Google", "Facebook", "Baidu", "Apple"];
/// Average encoded sizes the `extra` column pads events to.
const AVG_PERSON_BYTES: usize = 200;
const AVG_AUCTION_BYTES: usize = 500;
const AVG_BID_BYTES: usize = 100;

const FIRST_NAMES: [&str; 11] = [
    "Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter",
];
const LAST_NAMES: [&str; 9] = [
    "Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris",
];
const US_STATES: [&str; 6] = ["AZ", "CA", "ID", "OR", "WA", "WY"];
const US_CITIES: [&str; 10] = [
    "Phoenix",
    "Los Angeles",
    "San Francisco",
    "Boise",
    "Portland",
    "Bend",
    "Redmond",
    "Seattle",
    "Kent",
    "Cheyenne",
];

/// The standard columns of each event type.
pub fn standard_columns(event: NexmarkEvent) -> &'static [(&'static str, ColumnType)] {
    use ColumnType::{BigInt, Text, Timestamp};
    match event {
        NexmarkEvent::Person => &[
            ("id", BigInt),
            ("name", Text),
            ("email_address", Text),
            ("credit_card", Text),
            ("city", Text),
            ("state", Text),
            ("date_time", Timestamp),
            ("extra", Text),
        ],
        NexmarkEvent::Auction => &[
            ("id", BigInt),
            ("item_name", Text),
            ("description", Text),
            ("initial_bid", BigInt),
            ("reserve", BigInt),
            ("date_time", Timestamp),
            ("expires", Timestamp),
            ("seller", BigInt),
            ("category", BigInt),
            ("extra", Text),
        ],
        NexmarkEvent::Bid => &[
            ("auction", BigInt),
            ("bidder", BigInt),
            ("price", BigInt),
            ("channel", Text),
            ("url", Text),
            ("date_time", Timestamp),
            ("extra", Text),
        ],
    }
}

/// The index of the event-time column among the standard columns.
pub fn date_time_column(event: NexmarkEvent) -> usize {
    standard_columns(event)
        .iter()
        .position(|(name, _)| *name == "date_time")
        .expect("every Nexmark event has date_time")
}

/// Whether global event `n` is of type `event`.
pub fn is_event(event: NexmarkEvent, n: u64) -> bool {
    let rem = n % PROPORTION_DENOMINATOR;
    match event {
        NexmarkEvent::Person => rem < PERSON_PROPORTION,
        NexmarkEvent::Auction => {
            (PERSON_PROPORTION..PERSON_PROPORTION + AUCTION_PROPORTION).contains(&rem)
        }
        NexmarkEvent::Bid => rem >= PERSON_PROPORTION + AUCTION_PROPORTION,
    }
}

/// The 0-based id of the last person made at or before event `n`.
fn last_person(n: u64) -> u64 {
    // With one person per epoch, the last one is the epoch's (the general
    // form, for a larger proportion, takes the offset within the epoch).
    n / PROPORTION_DENOMINATOR * PERSON_PROPORTION + (PERSON_PROPORTION - 1)
}

/// The 0-based id of the last auction made at or before event `n`.
fn last_auction(n: u64) -> u64 {
    let mut epoch = n / PROPORTION_DENOMINATOR;
    let mut offset = n % PROPORTION_DENOMINATOR;
    if offset < PERSON_PROPORTION {
        // Before this epoch's auctions: the previous epoch's last one.
        if epoch == 0 {
            return 0;
        }
        epoch -= 1;
        offset = AUCTION_PROPORTION - 1;
    } else if offset >= PERSON_PROPORTION + AUCTION_PROPORTION {
        offset = AUCTION_PROPORTION - 1;
    } else {
        offset -= PERSON_PROPORTION;
    }
    epoch * AUCTION_PROPORTION + offset
}

/// A recent person, or one a little ahead (not yet made).
fn next_person(n: u64, rng: &mut Rng) -> u64 {
    let people = last_person(n) + 1;
    let active = people.min(NUM_ACTIVE_PEOPLE);
    people - active + rng.below(active + PERSON_ID_LEAD)
}

/// An auction in flight, or one a little ahead.
fn next_auction(n: u64, rng: &mut Rng) -> u64 {
    let max = last_auction(n);
    let min = max.saturating_sub(NUM_IN_FLIGHT_AUCTIONS);
    min + rng.below(max - min + 1 + AUCTION_ID_LEAD)
}

/// Prices spread over six orders of magnitude, in cents.
fn next_price(rng: &mut Rng) -> i64 {
    (10f64.powf(rng.unit() * 6.0) * 100.0).round() as i64
}

/// Appends padding so that an event of `current` bytes averages `average`.
fn extra(rng: &mut Rng, current: usize, average: usize, out: &mut String) {
    if current >= average {
        return;
    }
    let desired = average - current;
    let delta = (desired as f64 * 0.2).round() as usize;
    let len = desired - delta + rng.below(2 * delta as u64 + 1) as usize;
    rng.letters(len, out);
}

/// Salts that give each field its own random stream.
mod salt {
    pub const CORE: u64 = 1;
    pub const NAME: u64 = 2;
    pub const TEXT: u64 = 3;
    pub const EXTRA: u64 = 4;
    pub const URL: u64 = 5;
}

/// Makes the events of one type, for one seed and event-time spacing.
#[derive(Debug, Clone)]
pub struct NexmarkGenerator {
    event: NexmarkEvent,
    seed: u64,
    start_time_us: i64,
    events_per_second: u64,
    /// The standard columns to make, in output order.
    columns: Vec<usize>,
    schema: SchemaRef,
    hot_urls: [String; 4],
}

impl NexmarkGenerator {
    /// A generator of `columns` (indexes of standard columns, in output
    /// order) of `event` events; event `n` happens at `start_time_us +
    /// n / events_per_second` seconds.
    pub fn new(
        event: NexmarkEvent,
        columns: Vec<usize>,
        seed: u64,
        start_time_us: i64,
        events_per_second: u64,
    ) -> Self {
        let standard = standard_columns(event);
        let fields: Vec<Field> = columns
            .iter()
            .map(|&i| {
                let (name, column_type) = &standard[i];
                Field::new(*name, column_type.to_arrow(), true)
            })
            .collect();
        let hot_urls =
            std::array::from_fn(|i| base_url(&mut Rng::for_row(seed, salt::URL, i as u64)));
        NexmarkGenerator {
            event,
            seed,
            start_time_us,
            events_per_second,
            columns,
            schema: Arc::new(Schema::new(fields)),
            hot_urls,
        }
    }

    /// A generator of every standard column.
    pub fn all_columns(event: NexmarkEvent, seed: u64, start_time_us: i64, rate: u64) -> Self {
        let all = (0..standard_columns(event).len()).collect();
        Self::new(event, all, seed, start_time_us, rate)
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    pub fn event(&self) -> NexmarkEvent {
        self.event
    }

    fn time_us(&self, n: u64) -> i64 {
        event_time_us(self.start_time_us, self.events_per_second, n)
    }

    /// The events of this type among global events `from..to`, and the
    /// global number of each.
    pub fn generate(&self, from: u64, to: u64) -> (RecordBatch, Vec<u64>) {
        let numbers: Vec<u64> = (from..to).filter(|&n| is_event(self.event, n)).collect();
        let columns = match self.event {
            NexmarkEvent::Person => self.people(&numbers),
            NexmarkEvent::Auction => self.auctions(&numbers),
            NexmarkEvent::Bid => self.bids(&numbers),
        };
        let columns: Vec<ArrayRef> = self
            .columns
            .iter()
            .map(|&i| columns[i].clone().expect("selected columns are made"))
            .collect();
        let batch = RecordBatch::try_new(self.schema.clone(), columns)
            .expect("generated columns match their schema");
        (batch, numbers)
    }

    fn wants(&self, column: usize) -> bool {
        self.columns.contains(&column)
    }

    fn times(&self, numbers: &[u64]) -> ArrayRef {
        let mut b = TimestampMicrosecondBuilder::with_capacity(numbers.len());
        for &n in numbers {
            b.append_value(self.time_us(n));
        }
        Arc::new(b.finish())
    }

    fn people(&self, numbers: &[u64]) -> Vec<Option<ArrayRef>> {
        let len = numbers.len();
        let mut id = Int64Builder::with_capacity(len);
        let mut name = StringBuilder::with_capacity(len, len * 12);
        let mut email = StringBuilder::with_capacity(len, len * 14);
        let mut card = StringBuilder::with_capacity(len, len * 19);
        let mut city = StringBuilder::with_capacity(len, len * 8);
        let mut state = StringBuilder::with_capacity(len, len * 2);
        let mut extra_b = StringBuilder::with_capacity(len, len * AVG_PERSON_BYTES);
        let mut text = String::new();
        for &n in numbers {
            id.append_value(last_person(n) as i64 + FIRST_PERSON_ID);
            let mut rng = Rng::for_row(self.seed, salt::NAME, n);
            text.clear();
            text.push_str(FIRST_NAMES[rng.below(FIRST_NAMES.len() as u64) as usize]);
            text.push(' ');
            text.push_str(LAST_NAMES[rng.below(LAST_NAMES.len() as u64) as usize]);
            let size = text.len();
            name.append_value(&text);
            text.clear();
            rng.letters(7, &mut text);
            text.push('@');
            rng.letters(5, &mut text);
            text.push_str(".com");
            let size = size + text.len();
            email.append_value(&text);
            text.clear();
            for group in 0..4 {
                if group > 0 {
                    text.push(' ');
                }
                let digits = rng.below(10_000);
                text.push_str(&format!("{digits:04}"));
            }
            card.append_value(&text);
            let c = US_CITIES[rng.below(US_CITIES.len() as u64) as usize];
            let s = US_STATES[rng.below(US_STATES.len() as u64) as usize];
            city.append_value(c);
            state.append_value(s);
            if self.wants(7) {
                text.clear();
                let current = 8 + size + 19 + c.len() + s.len() + 8;
                extra(
                    &mut Rng::for_row(self.seed, salt::EXTRA, n),
                    current,
                    AVG_PERSON_BYTES,
                    &mut text,
                );
                extra_b.append_value(&text);
            }
        }
        let extra_col: Option<ArrayRef> = self.wants(7).then(|| Arc::new(extra_b.finish()) as _);
        vec![
            Some(Arc::new(id.finish())),
            Some(Arc::new(name.finish())),
            Some(Arc::new(email.finish())),
            Some(Arc::new(card.finish())),
            Some(Arc::new(city.finish())),
            Some(Arc::new(state.finish())),
            Some(self.times(numbers)),
            extra_col,
        ]
    }

    fn auctions(&self, numbers: &[u64]) -> Vec<Option<ArrayRef>> {
        let len = numbers.len();
        let mut id = Int64Builder::with_capacity(len);
        let mut item = StringBuilder::new();
        let mut description = StringBuilder::new();
        let mut initial = Int64Builder::with_capacity(len);
        let mut reserve = Int64Builder::with_capacity(len);
        let mut expires = TimestampMicrosecondBuilder::with_capacity(len);
        let mut seller = Int64Builder::with_capacity(len);
        let mut category = Int64Builder::with_capacity(len);
        let mut extra_b = StringBuilder::new();
        let texts = self.wants(1) || self.wants(2);
        let mut text = String::new();
        // How far ahead the auctions in flight reach, in event time.
        let horizon_events = NUM_IN_FLIGHT_AUCTIONS * PROPORTION_DENOMINATOR / AUCTION_PROPORTION;
        for &n in numbers {
            let mut rng = Rng::for_row(self.seed, salt::CORE, n);
            id.append_value(last_auction(n) as i64 + FIRST_AUCTION_ID);
            let first = next_price(&mut rng);
            initial.append_value(first);
            reserve.append_value(first + next_price(&mut rng));
            let now = self.time_us(n);
            let horizon = self.time_us(n + horizon_events) - now;
            let length = 1 + rng.below((horizon * 2).max(1) as u64) as i64;
            expires.append_value(now + length);
            let s = if rng.below(HOT_SELLER_CHANCE) > 0 {
                (last_person(n) / HOT_SELLER_RATIO) * HOT_SELLER_RATIO
            } else {
                next_person(n, &mut rng)
            };
            seller.append_value(s as i64 + FIRST_PERSON_ID);
            category.append_value(FIRST_CATEGORY_ID + rng.below(NUM_CATEGORIES) as i64);
            let mut size = 8 * 7;
            if texts {
                let mut rng = Rng::for_row(self.seed, salt::TEXT, n);
                text.clear();
                let len = 3 + rng.below(18) as usize;
                rng.letters(len, &mut text);
                item.append_value(&text);
                size += text.len();
                text.clear();
                let len = 3 + rng.below(98) as usize;
                rng.letters(len, &mut text);
                description.append_value(&text);
                size += text.len();
            }
            if self.wants(9) {
                text.clear();
                extra(
                    &mut Rng::for_row(self.seed, salt::EXTRA, n),
                    size,
                    AVG_AUCTION_BYTES,
                    &mut text,
                );
                extra_b.append_value(&text);
            }
        }
        let item: Option<ArrayRef> = texts.then(|| Arc::new(item.finish()) as _);
        let description: Option<ArrayRef> = texts.then(|| Arc::new(description.finish()) as _);
        let extra_col: Option<ArrayRef> = self.wants(9).then(|| Arc::new(extra_b.finish()) as _);
        vec![
            Some(Arc::new(id.finish())),
            item,
            description,
            Some(Arc::new(initial.finish())),
            Some(Arc::new(reserve.finish())),
            Some(self.times(numbers)),
            Some(Arc::new(expires.finish())),
            Some(Arc::new(seller.finish())),
            Some(Arc::new(category.finish())),
            extra_col,
        ]
    }

    fn bids(&self, numbers: &[u64]) -> Vec<Option<ArrayRef>> {
        let len = numbers.len();
        let mut auction = Int64Builder::with_capacity(len);
        let mut bidder = Int64Builder::with_capacity(len);
        let mut price = Int64Builder::with_capacity(len);
        let mut channel = StringBuilder::with_capacity(len, len * 10);
        let urls = self.wants(4);
        let mut url = StringBuilder::with_capacity(len, if urls { len * 80 } else { 0 });
        let mut extra_b = StringBuilder::new();
        let mut text = String::new();
        for &n in numbers {
            let mut rng = Rng::for_row(self.seed, salt::CORE, n);
            let a = if rng.below(HOT_AUCTION_CHANCE) > 0 {
                (last_auction(n) / HOT_AUCTION_RATIO) * HOT_AUCTION_RATIO
            } else {
                next_auction(n, &mut rng)
            };
            auction.append_value(a as i64 + FIRST_AUCTION_ID);
            let b = if rng.below(HOT_BIDDER_CHANCE) > 0 {
                (last_person(n) / HOT_BIDDER_RATIO) * HOT_BIDDER_RATIO + 1
            } else {
                next_person(n, &mut rng)
            };
            bidder.append_value(b as i64 + FIRST_PERSON_ID);
            price.append_value(next_price(&mut rng));
            // As the standard generator, pad bids for their numbers only.
            let size = 8 * 4;
            if rng.below(HOT_CHANNEL_CHANCE) > 0 {
                let i = rng.below(HOT_CHANNELS.len() as u64) as usize;
                channel.append_value(HOT_CHANNELS[i]);
                if urls {
                    url.append_value(&self.hot_urls[i]);
                }
            } else {
                let number = rng.below(CHANNELS) as u32;
                text.clear();
                text.push_str("channel-");
                text.push_str(&number.to_string());
                channel.append_value(&text);
                if urls {
                    text.clear();
                    text.push_str(&base_url(&mut Rng::for_row(self.seed, salt::URL, n)));
                    text.push_str("&channel_id=");
                    text.push_str(&(number.reverse_bits() as i32).unsigned_abs().to_string());
                    url.append_value(&text);
                }
            }
            if self.wants(6) {
                text.clear();
                extra(
                    &mut Rng::for_row(self.seed, salt::EXTRA, n),
                    size,
                    AVG_BID_BYTES,
                    &mut text,
                );
                extra_b.append_value(&text);
            }
        }
        let url: Option<ArrayRef> = urls.then(|| Arc::new(url.finish()) as _);
        let extra_col: Option<ArrayRef> = self.wants(6).then(|| Arc::new(extra_b.finish()) as _);
        vec![
            Some(Arc::new(auction.finish())),
            Some(Arc::new(bidder.finish())),
            Some(Arc::new(price.finish())),
            Some(Arc::new(channel.finish())),
            url,
            Some(self.times(numbers)),
            extra_col,
        ]
    }
}

/// Each row of `batch` as one JSON object (the `eddy nexmark load` record
/// values), timestamps as ISO 8601 text.
pub fn json_lines(batch: &RecordBatch) -> Result<Vec<Vec<u8>>, ArrowError> {
    let mut buffer = Vec::with_capacity(batch.num_rows() * 128);
    let mut writer = LineDelimitedWriter::new(&mut buffer);
    writer.write(batch)?;
    writer.finish()?;
    Ok(buffer
        .split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
        .map(<[u8]>::to_vec)
        .collect())
}

/// A product page address, as the standard generator makes them.
fn base_url(rng: &mut Rng) -> String {
    let mut url = String::from("https://www.nexmark.com/");
    for _ in 0..3 {
        let len = 3 + rng.below(3) as usize;
        rng.letters(len, &mut url);
        url.push('/');
    }
    url.push_str("item.htm?query=1");
    url
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Array, AsArray, Int64Array};
    use datafusion::arrow::datatypes::Int64Type;

    use super::*;

    fn column(batch: &RecordBatch, name: &str) -> Int64Array {
        batch
            .column_by_name(name)
            .unwrap()
            .as_primitive::<Int64Type>()
            .clone()
    }

    #[test]
    fn proportions_are_1_3_46() {
        let count = |event| {
            let (batch, _) = NexmarkGenerator::all_columns(event, 1, 0, 10_000).generate(0, 5_000);
            batch.num_rows()
        };
        assert_eq!(count(NexmarkEvent::Person), 100);
        assert_eq!(count(NexmarkEvent::Auction), 300);
        assert_eq!(count(NexmarkEvent::Bid), 4_600);
    }

    #[test]
    fn events_do_not_depend_on_batch_boundaries() {
        for event in [
            NexmarkEvent::Person,
            NexmarkEvent::Auction,
            NexmarkEvent::Bid,
        ] {
            let generator = NexmarkGenerator::all_columns(event, 42, 1_000_000, 10_000);
            let (whole, numbers) = generator.generate(0, 1_000);
            let (a, na) = generator.generate(0, 377);
            let (b, nb) = generator.generate(377, 1_000);
            let joined =
                datafusion::arrow::compute::concat_batches(generator.schema(), [&a, &b]).unwrap();
            assert_eq!(whole, joined, "{event:?}");
            assert_eq!(numbers, [na, nb].concat());
        }
    }

    #[test]
    fn a_subset_of_columns_has_the_same_values() {
        let all = NexmarkGenerator::all_columns(NexmarkEvent::Bid, 3, 0, 10_000);
        let some = NexmarkGenerator::new(NexmarkEvent::Bid, vec![2, 0], 3, 0, 10_000);
        let (full, _) = all.generate(100, 900);
        let (part, _) = some.generate(100, 900);
        assert_eq!(part.schema().field(0).name(), "price");
        assert_eq!(part.column(0), full.column(2));
        assert_eq!(part.column(1), full.column(0));
    }

    #[test]
    fn bids_favour_hot_auctions_and_bidders_and_reference_existing_ids() {
        let generator = NexmarkGenerator::all_columns(NexmarkEvent::Bid, 9, 0, 10_000);
        let (bids, numbers) = generator.generate(0, 100_000);
        let auctions = column(&bids, "auction");
        let bidders = column(&bids, "bidder");
        let mut per_auction = std::collections::HashMap::<i64, usize>::new();
        for (i, &n) in numbers.iter().enumerate() {
            let a = auctions.value(i);
            *per_auction.entry(a).or_default() += 1;
            // Never further ahead than the lead allows.
            let newest = last_auction(n) as i64 + FIRST_AUCTION_ID;
            assert!(
                a <= newest + AUCTION_ID_LEAD as i64,
                "auction {a} at event {n}"
            );
            assert!(bidders.value(i) >= FIRST_PERSON_ID);
        }
        // Hot auctions (multiples of 100) take about half the bids.
        let hot: usize = per_auction
            .iter()
            .filter(|(a, _)| (**a - FIRST_AUCTION_ID) % HOT_AUCTION_RATIO as i64 == 0)
            .map(|(_, n)| n)
            .sum();
        let share = hot as f64 / bids.num_rows() as f64;
        assert!((0.45..0.6).contains(&share), "hot auction share {share}");
        let hot_bidders = (0..bidders.len())
            .filter(|&i| (bidders.value(i) - FIRST_PERSON_ID) % HOT_BIDDER_RATIO as i64 == 1)
            .count() as f64
            / bidders.len() as f64;
        assert!(
            (0.7..0.85).contains(&hot_bidders),
            "hot bidder share {hot_bidders}"
        );
    }

    #[test]
    fn auctions_expire_after_they_open_and_people_have_sequential_ids() {
        let auctions = NexmarkGenerator::all_columns(NexmarkEvent::Auction, 5, 0, 1_000);
        let (batch, _) = auctions.generate(0, 10_000);
        let opened = batch
            .column(5)
            .as_primitive::<datafusion::arrow::datatypes::TimestampMicrosecondType>();
        let expires = batch
            .column(6)
            .as_primitive::<datafusion::arrow::datatypes::TimestampMicrosecondType>();
        assert!((0..batch.num_rows()).all(|i| expires.value(i) > opened.value(i)));
        let ids = column(&batch, "id");
        assert_eq!(ids.value(0), FIRST_AUCTION_ID);
        assert_eq!(ids.value(599), FIRST_AUCTION_ID + 599);
        let people = NexmarkGenerator::all_columns(NexmarkEvent::Person, 5, 0, 1_000);
        let (batch, _) = people.generate(0, 500);
        let ids = column(&batch, "id");
        assert_eq!(ids.values().to_vec(), (1000..1010).collect::<Vec<i64>>());
        let extra = batch.column(7).as_string::<i32>();
        let sizes: usize = (0..extra.len()).map(|i| extra.value(i).len()).sum();
        assert!(
            sizes > 10 * 100,
            "people are padded toward {AVG_PERSON_BYTES} bytes"
        );
    }
}
