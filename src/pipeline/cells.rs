//! Per (video, day) sums and their packed form: sorted cells as varints.
//!
//! A partition's output over 1M videos was 1.3M cells of 32 bytes, about
//! 42 MB held by its worker and again by the conductor; packed it is about
//! 7 bytes a cell. The merged totals pack their large days the same way.

use serde::de::{SeqAccess, Visitor};
use serde::ser::SerializeSeq;

/// Sums of counted plays of one video on one day.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cell {
    pub views: i64,
    pub watch_seconds: i64,
    pub ad_views: i64,
}

impl Cell {
    #[inline(always)]
    pub(crate) fn sub(&mut self, watch: u32, ads: u32) {
        self.views -= 1;
        self.watch_seconds -= watch as i64;
        self.ad_views -= ads as i64;
    }

    pub fn merge(&mut self, o: &Cell) {
        self.views += o.views;
        self.watch_seconds += o.watch_seconds;
        self.ad_views += o.ad_views;
    }

    pub fn is_zero(&self) -> bool {
        *self == Cell::default()
    }
}

/// Appends `v` as a little-endian base-128 varint.
#[inline]
fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Sums go in zigzag form, so a negative one (a correction, or a hostile
/// restart) costs bytes, not correctness.
#[inline]
fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

#[inline]
fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Appends one cell: its key's gap from the one after the previous cell,
/// then views, ad views and watch seconds. Keys must ascend.
#[inline]
pub(crate) fn put_cell(out: &mut Vec<u8>, next: &mut u64, key: u64, c: &Cell) {
    debug_assert!(key >= *next, "packed keys ascend");
    put_varint(out, key.wrapping_sub(*next));
    put_varint(out, zigzag(c.views));
    put_varint(out, zigzag(c.ad_views));
    put_varint(out, zigzag(c.watch_seconds));
    *next = key.wrapping_add(1);
}

/// Reads varints back from bytes made by `put_varint`. The bytes are only
/// ever made here, never read from outside, so they are not re-checked.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    #[inline]
    fn at_end(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    #[inline]
    fn varint(&mut self) -> u64 {
        let mut v = 0u64;
        let mut shift = 0;
        loop {
            let b = self.bytes[self.pos];
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return v;
            }
            shift += 7;
        }
    }
}

/// The cells of packed bytes, in key order.
pub(crate) struct Unpack<'a> {
    r: Reader<'a>,
    next: u64,
}

impl<'a> Unpack<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Unpack {
            r: Reader { bytes, pos: 0 },
            next: 0,
        }
    }
}

impl Iterator for Unpack<'_> {
    type Item = (u64, Cell);

    #[inline]
    fn next(&mut self) -> Option<(u64, Cell)> {
        if self.r.at_end() {
            return None;
        }
        let key = self.next.wrapping_add(self.r.varint());
        let views = unzigzag(self.r.varint());
        let ad_views = unzigzag(self.r.varint());
        let watch_seconds = unzigzag(self.r.varint());
        self.next = key.wrapping_add(1);
        Some((
            key,
            Cell {
                views,
                watch_seconds,
                ad_views,
            },
        ))
    }
}

/// Rows of an ascending id and `N` sums, packed as varints (about 12
/// bytes a priced row instead of 56): what a swap publish holds back of
/// the weeks and months until the days are written.
#[derive(Default)]
pub(crate) struct PackedRows<const N: usize> {
    bytes: Vec<u8>,
    next: u64,
}

impl<const N: usize> PackedRows<N> {
    /// Appends a row; ids must ascend.
    pub(crate) fn push(&mut self, id: i64, sums: &[i64; N]) {
        let key = id_key(id);
        debug_assert!(key >= self.next, "packed ids ascend");
        put_varint(&mut self.bytes, key.wrapping_sub(self.next));
        for &v in sums {
            put_varint(&mut self.bytes, zigzag(v));
        }
        self.next = key.wrapping_add(1);
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (i64, [i64; N])> + '_ {
        let mut r = Reader {
            bytes: &self.bytes,
            pos: 0,
        };
        let mut next = 0u64;
        std::iter::from_fn(move || {
            if r.at_end() {
                return None;
            }
            let key = next.wrapping_add(r.varint());
            next = key.wrapping_add(1);
            let sums = std::array::from_fn(|_| unzigzag(r.varint()));
            Some((key_id(key), sums))
        })
    }
}

/// Video ids as keys that ascend with them (a negative id sorts first).
#[inline]
fn id_key(video_id: i64) -> u64 {
    (video_id as u64) ^ (1 << 63)
}

#[inline]
fn key_id(key: u64) -> i64 {
    (key ^ (1 << 63)) as i64
}

/// One day of a partition: (video_id, cell) by ascending video id, packed.
/// It serializes as the plain sequence of pairs, so kept results written
/// before it existed still read, and new ones read in older tools.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PackedCells {
    bytes: Vec<u8>,
    len: usize,
}

impl PackedCells {
    /// Packs cells given in ascending video-id order, each video once.
    pub fn from_sorted(cells: impl IntoIterator<Item = (i64, Cell)>) -> Self {
        let mut p = PackedCells::default();
        let mut next = 0;
        for (video_id, c) in cells {
            put_cell(&mut p.bytes, &mut next, id_key(video_id), &c);
            p.len += 1;
        }
        p.bytes.shrink_to_fit();
        p
    }

    /// Packs cells in any order, summing a video given more than once.
    pub fn from_unsorted(mut cells: Vec<(i64, Cell)>) -> Self {
        sort_summing(&mut cells);
        Self::from_sorted(cells)
    }

    /// (video_id, cell) in ascending video-id order.
    pub fn iter(&self) -> impl Iterator<Item = (i64, Cell)> + '_ {
        Unpack::new(&self.bytes).map(|(k, c)| (key_id(k), c))
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn heap_bytes(&self) -> usize {
        self.bytes.capacity()
    }
}

impl serde::Serialize for PackedCells {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.len))?;
        for pair in self.iter() {
            seq.serialize_element(&pair)?;
        }
        seq.end()
    }
}

impl<'de> serde::Deserialize<'de> for PackedCells {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Pairs;
        impl<'de> Visitor<'de> for Pairs {
            type Value = PackedCells;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a sequence of (video_id, cell)")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<PackedCells, A::Error> {
                // A stored result is not trusted to be sorted: repack it.
                let mut cells: Vec<(i64, Cell)> =
                    Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
                while let Some(pair) = seq.next_element()? {
                    cells.push(pair);
                }
                Ok(PackedCells::from_unsorted(cells))
            }
        }
        d.deserialize_seq(Pairs)
    }
}

/// Sorts cells by key and sums the cells of a key given more than once.
pub(crate) fn sort_summing<K: Ord + Copy>(cells: &mut Vec<(K, Cell)>) {
    cells.sort_unstable_by_key(|c| c.0);
    cells.dedup_by(|later, kept| {
        let same = later.0 == kept.0;
        if same {
            kept.1.merge(&later.1);
        }
        same
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Extreme sums and ids, both signs, and the 7-bit edges come back as
    /// they went in, in id order, and in the plain pairs' serialized form.
    #[test]
    fn partition_cells_round_trip_and_serialize_as_plain_pairs() {
        let sums = [i64::MIN, i64::MAX, -1, 0, 1, 63, 64, 127, 128, 16_383];
        let ids = [i64::MIN, -300_000, -1, 0, 1, 127, 128, 300_000, i64::MAX];
        let mut cells = Vec::new();
        for (i, &id) in ids.iter().enumerate() {
            let s = |k: usize| sums[(i + k) % sums.len()];
            let c = Cell {
                views: s(0),
                watch_seconds: s(3),
                ad_views: s(7),
            };
            cells.push((id, c));
        }
        let mut shuffled = cells.clone();
        shuffled.reverse();
        let packed = PackedCells::from_unsorted(shuffled);
        assert_eq!(packed.len(), cells.len());
        assert_eq!(packed.iter().collect::<Vec<_>>(), cells);
        let plain = bincode::serialize(&cells).unwrap();
        assert_eq!(bincode::serialize(&packed).unwrap(), plain);
        let back: PackedCells = bincode::deserialize(&plain).unwrap();
        assert_eq!(back, packed);
    }

    /// Rows of ids and sums of both signs come back in order.
    #[test]
    fn packed_rows_round_trip() {
        let rows: Vec<(i64, [i64; 3])> = vec![
            (i64::MIN, [i64::MAX, 0, -1]),
            (-5, [1, 2, 3]),
            (0, [i64::MIN, 128, -129]),
            (1_000_000, [0, 0, 0]),
            (i64::MAX, [7, -7, 16_384]),
        ];
        let mut packed = PackedRows::<3>::default();
        for (id, s) in &rows {
            packed.push(*id, s);
        }
        assert_eq!(packed.iter().collect::<Vec<_>>(), rows);
    }

    /// A video given twice is summed, not kept twice.
    #[test]
    fn unsorted_duplicates_are_summed() {
        let one = Cell {
            views: 2,
            watch_seconds: 30,
            ad_views: 1,
        };
        let packed = PackedCells::from_unsorted(vec![(9, one), (4, one), (9, one)]);
        let two = Cell {
            views: 4,
            watch_seconds: 60,
            ad_views: 2,
        };
        assert_eq!(packed.iter().collect::<Vec<_>>(), vec![(4, one), (9, two)]);
    }
}
