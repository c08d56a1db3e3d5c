//! The embedded store's write-ahead log: how a group commit becomes durable with one sequential
//! append and one `fdatasync`, whatever the size of the store.
//!
//! redb is a copy-on-write B-tree: a durable commit rewrites every leaf it touched and their branch
//! pages, at random places, and syncs them. The more the store holds, the more pages a commit of the
//! same work touches (29 page writes per commit on an empty store, 46 at 50 000 ports), and the longer
//! its sync takes. So the writer commits its batches to redb *without* a sync
//! ([`redb::Durability::None`]: visible at once, gone after a crash) and makes each batch durable by
//! appending its [`Change`]s, the rows it wrote and deleted, to this log and syncing it first. Every so
//! often (when the log has grown past [`CHECKPOINT_BYTES`], and when the store closes) a batch commits
//! to redb durably instead, which makes every earlier batch durable too; the log is then emptied.
//!
//! Each batch carries a sequence number, which the batch also writes to redb's own meta table: after a
//! crash redb comes back at its last durable commit (or later), and the log's records after the
//! sequence number redb holds are applied again, in order. A record is `[payload length: u32]
//! [crc32 of seq and payload: u32][seq: u64][payload]`, all little-endian; reading stops at the first
//! record that is cut short or fails its checksum (the unsynced tail of a crash). Emptying the log is
//! synced, so that no record of before a checkpoint can reappear among later ones.

use redb::StorageBackend;

use crate::{LeaseId, Revision, StoreError};

/// The log is emptied (after a durable redb commit) once it holds this much.
pub(super) const CHECKPOINT_BYTES: u64 = 8 << 20;

/// Size of a record's header: payload length, checksum, sequence number.
const HEADER: usize = 16;

/// One row written or deleted in one of the store's tables: the unit the log records and replays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Change<'a> {
    KvPut(&'a str, &'a [u8]),
    KvDelete(&'a str),
    LogPut(Revision, &'a [u8]),
    /// Drops the change log's revisions `from..=to` (compaction).
    LogDrop(Revision, Revision),
    Meta(&'a str, u64),
    LeasePut(LeaseId, u64),
    LeaseDelete(LeaseId),
    KeyLeasePut(&'a str, LeaseId),
    KeyLeaseDelete(&'a str),
    LeaseKeyPut(&'a str),
    LeaseKeyDelete(&'a str),
}

impl Change<'_> {
    fn tag(&self) -> u8 {
        match self {
            Change::KvPut(..) => 1,
            Change::KvDelete(..) => 2,
            Change::LogPut(..) => 3,
            Change::LogDrop(..) => 4,
            Change::Meta(..) => 5,
            Change::LeasePut(..) => 6,
            Change::LeaseDelete(..) => 7,
            Change::KeyLeasePut(..) => 8,
            Change::KeyLeaseDelete(..) => 9,
            Change::LeaseKeyPut(..) => 10,
            Change::LeaseKeyDelete(..) => 11,
        }
    }

    /// Appends the change's encoding (its tag, then its fields: numbers as 8 bytes, strings and
    /// byte strings as a u32 length and the bytes) to `out`.
    pub(super) fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.tag());
        let bytes = |out: &mut Vec<u8>, b: &[u8]| {
            out.extend_from_slice(&(b.len() as u32).to_le_bytes());
            out.extend_from_slice(b);
        };
        match *self {
            Change::KvPut(key, value) => {
                bytes(out, key.as_bytes());
                bytes(out, value);
            }
            Change::LogPut(revision, record) => {
                out.extend_from_slice(&revision.to_le_bytes());
                bytes(out, record);
            }
            Change::LogDrop(from, to) => {
                out.extend_from_slice(&from.to_le_bytes());
                out.extend_from_slice(&to.to_le_bytes());
            }
            Change::Meta(key, value) => {
                bytes(out, key.as_bytes());
                out.extend_from_slice(&value.to_le_bytes());
            }
            Change::LeasePut(lease, ttl) => {
                out.extend_from_slice(&lease.to_le_bytes());
                out.extend_from_slice(&ttl.to_le_bytes());
            }
            Change::LeaseDelete(lease) => out.extend_from_slice(&lease.to_le_bytes()),
            Change::KeyLeasePut(key, lease) => {
                bytes(out, key.as_bytes());
                out.extend_from_slice(&lease.to_le_bytes());
            }
            Change::KvDelete(key)
            | Change::KeyLeaseDelete(key)
            | Change::LeaseKeyPut(key)
            | Change::LeaseKeyDelete(key) => bytes(out, key.as_bytes()),
        }
    }

    /// Decodes the change at the start of `data` and advances past it.
    pub(super) fn decode<'a>(data: &mut &'a [u8]) -> Result<Change<'a>, StoreError> {
        let mut r = Reader(data);
        let change = match r.byte()? {
            1 => Change::KvPut(r.str()?, r.bytes()?),
            2 => Change::KvDelete(r.str()?),
            3 => Change::LogPut(r.u64()?, r.bytes()?),
            4 => Change::LogDrop(r.u64()?, r.u64()?),
            5 => Change::Meta(r.str()?, r.u64()?),
            6 => Change::LeasePut(r.i64()?, r.u64()?),
            7 => Change::LeaseDelete(r.i64()?),
            8 => Change::KeyLeasePut(r.str()?, r.i64()?),
            9 => Change::KeyLeaseDelete(r.str()?),
            10 => Change::LeaseKeyPut(r.str()?),
            11 => Change::LeaseKeyDelete(r.str()?),
            _ => return Err(corrupt()),
        };
        Ok(change)
    }
}

fn corrupt() -> StoreError {
    StoreError::Corrupt("write-ahead log record".into())
}

/// Reads fields off the front of a byte slice.
struct Reader<'r, 'a>(&'r mut &'a [u8]);

impl<'a> Reader<'_, 'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        let (head, rest) = self.0.split_at_checked(n).ok_or_else(corrupt)?;
        *self.0 = rest;
        Ok(head)
    }
    fn byte(&mut self) -> Result<u8, StoreError> {
        Ok(self.take(1)?[0])
    }
    fn u64(&mut self) -> Result<u64, StoreError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().map_err(|_| corrupt())?,
        ))
    }
    fn i64(&mut self) -> Result<i64, StoreError> {
        Ok(self.u64()? as i64)
    }
    fn bytes(&mut self) -> Result<&'a [u8], StoreError> {
        let len = u32::from_le_bytes(self.take(4)?.try_into().map_err(|_| corrupt())?);
        self.take(len as usize)
    }
    fn str(&mut self) -> Result<&'a str, StoreError> {
        std::str::from_utf8(self.bytes()?).map_err(|_| corrupt())
    }
}

/// One batch's record as read back: its sequence number and its encoded changes.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Record {
    pub(super) seq: u64,
    pub(super) changes: Vec<u8>,
}

impl Record {
    /// The record's changes, decoded.
    pub(super) fn changes(&self) -> impl Iterator<Item = Result<Change<'_>, StoreError>> {
        let mut data = self.changes.as_slice();
        std::iter::from_fn(move || (!data.is_empty()).then(|| Change::decode(&mut data)))
    }
}

fn checksum(seq: u64, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&seq.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

/// The log file.
pub(super) struct Wal {
    storage: Box<dyn StorageBackend>,
    /// Where the next record goes.
    len: u64,
    /// A record of a batch that did not commit could not be taken back: nothing more may be
    /// appended (its sequence number would be used twice).
    broken: bool,
}

impl Wal {
    pub(super) fn new(storage: Box<dyn StorageBackend>) -> Result<Self, StoreError> {
        let len = storage.len().map_err(io)?;
        Ok(Self {
            storage,
            len,
            broken: false,
        })
    }

    /// How many bytes the log holds.
    pub(super) fn len(&self) -> u64 {
        self.len
    }

    /// Every whole record, oldest first, up to the first that is cut short or fails its checksum.
    pub(super) fn records(&self) -> Result<Vec<Record>, StoreError> {
        let size = usize::try_from(self.len).map_err(|_| corrupt())?;
        let mut data = vec![0; size];
        self.storage.read(0, &mut data).map_err(io)?;
        let mut records = Vec::new();
        let mut rest = data.as_slice();
        while let Some((header, tail)) = rest.split_at_checked(HEADER) {
            let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
            let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
            let seq = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
            let Some((payload, after)) = tail.split_at_checked(len) else {
                break;
            };
            if seq == 0 || checksum(seq, payload) != crc {
                break;
            }
            records.push(Record {
                seq,
                changes: payload.to_vec(),
            });
            rest = after;
        }
        Ok(records)
    }

    /// Appends batch `seq`'s encoded changes and syncs them: the batch is durable when this returns.
    /// On failure the log is cut back to where it was.
    pub(super) fn append(&mut self, seq: u64, changes: &[u8]) -> Result<(), StoreError> {
        if self.broken {
            return Err(StoreError::Backend(
                "write-ahead log: a failed batch could not be taken back; reopen the store".into(),
            ));
        }
        let len = u32::try_from(changes.len())
            .map_err(|_| StoreError::Backend("batch too large for the write-ahead log".into()))?;
        let mut header = [0; HEADER];
        header[0..4].copy_from_slice(&len.to_le_bytes());
        header[4..8].copy_from_slice(&checksum(seq, changes).to_le_bytes());
        header[8..16].copy_from_slice(&seq.to_le_bytes());
        let end = self.len + (HEADER + changes.len()) as u64;
        // A storage backend need not grow on a write past its end: grow it first.
        let written = self
            .storage
            .set_len(end)
            .and_then(|()| self.storage.write(self.len, &header))
            .and_then(|()| self.storage.write(self.len + HEADER as u64, changes))
            .and_then(|()| self.storage.sync_data());
        if let Err(e) = written {
            self.truncate(self.len)?;
            return Err(io(e));
        }
        self.len = end;
        Ok(())
    }

    /// Takes back the last record appended (at `start`), when the batch it recorded failed to commit.
    pub(super) fn truncate(&mut self, start: u64) -> Result<(), StoreError> {
        let cut = self
            .storage
            .set_len(start)
            .and_then(|()| self.storage.sync_data());
        if let Err(e) = cut {
            self.broken = true;
            return Err(io(e));
        }
        self.len = start;
        Ok(())
    }

    /// Empties the log, once redb holds all of it durably.
    pub(super) fn clear(&mut self) -> Result<(), StoreError> {
        self.truncate(0)
    }
}

fn io(e: std::io::Error) -> StoreError {
    StoreError::Backend(format!("write-ahead log: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use redb::backends::InMemoryBackend;

    fn change() -> impl Strategy<Value = (u8, String, Vec<u8>, u64, i64)> {
        (
            1u8..=11,
            ".{0,12}",
            proptest::collection::vec(any::<u8>(), 0..40),
            any::<u64>(),
            any::<i64>(),
        )
    }

    fn build<'a>(tag: u8, s: &'a str, b: &'a [u8], n: u64, l: i64) -> Change<'a> {
        match tag {
            1 => Change::KvPut(s, b),
            2 => Change::KvDelete(s),
            3 => Change::LogPut(n, b),
            4 => Change::LogDrop(n, n / 2),
            5 => Change::Meta(s, n),
            6 => Change::LeasePut(l, n),
            7 => Change::LeaseDelete(l),
            8 => Change::KeyLeasePut(s, l),
            9 => Change::KeyLeaseDelete(s),
            10 => Change::LeaseKeyPut(s),
            _ => Change::LeaseKeyDelete(s),
        }
    }

    proptest! {
        #[test]
        fn changes_decode_to_what_was_encoded(items in proptest::collection::vec(change(), 0..20)) {
            let changes: Vec<Change> =
                items.iter().map(|(t, s, b, n, l)| build(*t, s, b, *n, *l)).collect();
            let mut out = Vec::new();
            for c in &changes {
                c.encode(&mut out);
            }
            let record = Record { seq: 1, changes: out };
            let back: Vec<Change> = record.changes().collect::<Result<_, _>>().unwrap();
            prop_assert_eq!(back, changes);
        }

        #[test]
        fn a_cut_or_damaged_tail_ends_the_records_before_it(cut in 0usize..200, flip in 0usize..200) {
            let mut wal = Wal::new(Box::new(InMemoryBackend::new())).unwrap();
            let payloads: Vec<Vec<u8>> = (1..=4u8).map(|i| vec![i; 10 * i as usize]).collect();
            for (i, p) in payloads.iter().enumerate() {
                wal.append(i as u64 + 1, p).unwrap();
            }
            let whole = wal.records().unwrap();
            prop_assert_eq!(whole.len(), 4);
            let total = wal.len() as usize;
            let mut bytes = vec![0; total];
            wal.storage.read(0, &mut bytes).unwrap();
            // Cut the file short, or flip one byte: the records before the damage remain, none after.
            let (damaged, at) = if cut % 2 == 0 {
                let at = cut % total;
                (bytes[..at].to_vec(), at)
            } else {
                let at = flip % total;
                let mut b = bytes.clone();
                b[at] ^= 0x40;
                (b, at)
            };
            let storage = InMemoryBackend::new();
            storage.set_len(damaged.len() as u64).unwrap();
            storage.write(0, &damaged).unwrap();
            let read = Wal::new(Box::new(storage)).unwrap().records().unwrap();
            let mut start = 0;
            let intact = whole
                .iter()
                .take_while(|r| {
                    start += HEADER + r.changes.len();
                    start <= at
                })
                .count();
            prop_assert_eq!(read.len(), intact);
            prop_assert_eq!(&read[..], &whole[..intact]);
        }
    }
}
