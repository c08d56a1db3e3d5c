//! A simulated disk for crash tests: files, as redb storage backends, that keep what `sync_data` made
//! durable apart from what was written since (the OS page cache), so that a simulated power cut really
//! loses every unsynced write. A plain reopen of a real file cannot show that: the page cache keeps the
//! writes of a process that never synced.
//!
//! A [`CrashDisk`] holds [`FILES`] files (the store's and its write-ahead log's), each with two
//! images: the durable one (what a power cut leaves) and the cached one (what reads see: the durable
//! image plus every write since that file's last sync). [`CrashDisk::power_cut`] or a cut armed with
//! [`CrashDisk::cut_power_at_sync`] (counting the syncs of all files) takes a [`DiskImage`] of every
//! file at once, from which a new disk, and a new store, is opened. Two kinds of cut:
//!
//! - [`Cut::Clean`]: no unsynced write reaches the disk.
//! - [`Cut::Torn`]: each 4 KiB piece (redb's page size) of each unsynced write reaches the disk or
//!   not, independently. redb documents that its single-fsync commit tolerates this ("if some, but not
//!   all the data is written", the commit is detected by its checksums and rolled back: redb's
//!   docs/design.md, "1-phase + checksum durable commits"). Length changes are kept whole: this models
//!   a file system that journals the file size, and does not tear a write below 4 KiB.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use redb::StorageBackend;

/// The unit in which a [`Cut::Torn`] tears an unsynced write.
const TEAR_UNIT: u64 = 4096;

/// How a power cut treats the writes not yet synced.
#[derive(Debug, Clone, Copy)]
pub enum Cut {
    /// None of them reaches the disk.
    Clean,
    /// Each 4 KiB piece of each of them reaches the disk or not, chosen by a generator seeded with this.
    Torn(u64),
}

/// How many files a disk holds.
pub const FILES: usize = 2;

/// The contents of a disk's files after a crash, to open a new [`CrashDisk`] from.
#[derive(Debug, Clone)]
pub struct DiskImage([Vec<u8>; FILES]);

/// A change made since the last sync, kept to replay part of it in a [`Cut::Torn`].
#[derive(Debug)]
enum Unsynced {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

/// A power cut armed to happen at a later sync.
#[derive(Debug)]
struct Tripwire {
    /// How many more syncs to let through before the one the power is cut at.
    syncs_before: u64,
    cut: Cut,
}

/// One file of a disk.
#[derive(Debug, Default)]
struct FileState {
    /// What survives a power cut.
    durable: Vec<u8>,
    /// What reads see: `durable` with every `unsynced` change applied.
    cached: Vec<u8>,
    /// The changes since the last sync, oldest first.
    unsynced: Vec<Unsynced>,
}

#[derive(Debug, Default)]
struct Disk {
    files: [FileState; FILES],
    tripwire: Option<Tripwire>,
    /// The image taken by the armed power cut, once it happened.
    cut_image: Option<DiskImage>,
}

/// A simulated disk; clones share it.
#[derive(Debug, Clone, Default)]
pub struct CrashDisk(Arc<Mutex<Disk>>);

impl CrashDisk {
    /// An empty disk.
    pub fn new() -> Self {
        Self::default()
    }

    /// A disk holding `image`, all of it durable.
    pub fn from_image(image: DiskImage) -> Self {
        Self(Arc::new(Mutex::new(Disk {
            files: image.0.map(|bytes| FileState {
                cached: bytes.clone(),
                durable: bytes,
                unsynced: Vec::new(),
            }),
            ..Disk::default()
        })))
    }

    /// File `file` of this disk, whose `sync_data` makes the writes to it before it durable.
    pub fn file(&self, file: usize) -> CrashBackend {
        assert!(file < FILES, "the disk has {FILES} files");
        CrashBackend {
            disk: self.clone(),
            file,
            fsync: true,
        }
    }

    /// File `file` of this disk, whose `sync_data` does nothing: how a store that skipped its fsyncs
    /// would use a real disk.
    pub fn file_ignoring_sync(&self, file: usize) -> CrashBackend {
        CrashBackend {
            fsync: false,
            ..self.file(file)
        }
    }

    /// The store's file and its log's, as [`store::embedded::EmbeddedStore::open_on`] takes them.
    pub fn store_files(&self) -> (CrashBackend, CrashBackend) {
        (self.file(0), self.file(1))
    }

    /// Cuts the power now: what the disk would hold after it.
    pub fn power_cut(&self, cut: Cut) -> DiskImage {
        self.lock().after_cut(cut)
    }

    /// The process dies but the machine keeps running: the OS writes its page cache out later, so
    /// everything written survives, synced or not.
    pub fn process_crash(&self) -> DiskImage {
        DiskImage(self.lock().files.each_ref().map(|f| f.cached.clone()))
    }

    /// Cuts the power when the `nth` sync from now (1 for the next one) starts, before anything
    /// written since the previous sync is made durable. The disk goes on working afterwards (the
    /// process does not stop); [`Self::cut_image`] returns what the disk held after the cut.
    pub fn cut_power_at_sync(&self, nth: u64, cut: Cut) {
        assert!(nth >= 1, "the first sync is the 1st");
        self.lock().tripwire = Some(Tripwire {
            syncs_before: nth - 1,
            cut,
        });
    }

    /// Whether the power cut armed by [`Self::cut_power_at_sync`] has happened. A write acknowledged
    /// before this returned `false` was synced before the cut.
    pub fn power_was_cut(&self) -> bool {
        self.lock().cut_image.is_some()
    }

    /// What the disk held after the armed power cut, if it happened.
    pub fn cut_image(&self) -> Option<DiskImage> {
        self.lock().cut_image.clone()
    }

    fn lock(&self) -> MutexGuard<'_, Disk> {
        // A panic elsewhere in a test poisons the lock; the disk itself is still consistent.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Disk {
    fn after_cut(&self, cut: Cut) -> DiskImage {
        let mut n = 0;
        DiskImage(self.files.each_ref().map(|file| {
            n += 1;
            file.after_cut(cut, n)
        }))
    }
}

impl FileState {
    /// What this file (the `n`th of its disk) holds after a power cut.
    fn after_cut(&self, cut: Cut, n: u64) -> Vec<u8> {
        let mut image = self.durable.clone();
        if let Cut::Torn(seed) = cut {
            let mut lands = Coin(seed.wrapping_mul(31).wrapping_add(n));
            for change in &self.unsynced {
                match change {
                    Unsynced::SetLen(len) => resize(&mut image, *len),
                    Unsynced::Write { offset, data } => {
                        let end = offset + data.len() as u64;
                        let mut start = *offset;
                        while start < end {
                            let piece_end = ((start / TEAR_UNIT + 1) * TEAR_UNIT).min(end);
                            if lands.flip() {
                                let from = (start - offset) as usize;
                                let to = (piece_end - offset) as usize;
                                write_at(&mut image, start, &data[from..to]);
                            }
                            start = piece_end;
                        }
                    }
                }
            }
        }
        image
    }
}

fn resize(image: &mut Vec<u8>, len: u64) {
    image.resize(usize::try_from(len).expect("disk size fits in memory"), 0);
}

fn write_at(image: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let start = usize::try_from(offset).expect("offset fits in memory");
    let end = start + data.len();
    if image.len() < end {
        image.resize(end, 0);
    }
    image[start..end].copy_from_slice(data);
}

/// A small deterministic coin (splitmix64), so that a torn cut needs no random-number crate.
struct Coin(u64);

impl Coin {
    fn flip(&mut self) -> bool {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) & 1 == 1
    }
}

/// redb's view of one file of a [`CrashDisk`].
#[derive(Debug)]
pub struct CrashBackend {
    disk: CrashDisk,
    file: usize,
    /// Whether `sync_data` makes writes durable.
    fsync: bool,
}

impl StorageBackend for CrashBackend {
    fn len(&self) -> io::Result<u64> {
        Ok(self.disk.lock().files[self.file].cached.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let disk = self.disk.lock();
        let start = usize::try_from(offset).map_err(|_| past_end())?;
        let bytes = disk.files[self.file]
            .cached
            .get(start..start + out.len())
            .ok_or_else(past_end)?;
        out.copy_from_slice(bytes);
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut disk = self.disk.lock();
        let file = &mut disk.files[self.file];
        resize(&mut file.cached, len);
        file.unsynced.push(Unsynced::SetLen(len));
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut disk = self.disk.lock();
        let disk = &mut *disk;
        match &mut disk.tripwire {
            Some(Tripwire {
                syncs_before: 0,
                cut,
            }) => {
                let cut = *cut;
                disk.cut_image = Some(disk.after_cut(cut));
                disk.tripwire = None;
            }
            Some(tripwire) => tripwire.syncs_before -= 1,
            None => {}
        }
        if self.fsync {
            let file = &mut disk.files[self.file];
            file.durable.clone_from(&file.cached);
            file.unsynced.clear();
        }
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut disk = self.disk.lock();
        let file = &mut disk.files[self.file];
        write_at(&mut file.cached, offset, data);
        file.unsynced.push(Unsynced::Write {
            offset,
            data: data.to_vec(),
        });
        Ok(())
    }
}

fn past_end() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "read past the end of the disk",
    )
}
