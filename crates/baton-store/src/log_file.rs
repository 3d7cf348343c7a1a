//! The Raft log's entries in segment files of our own, written so that a sync costs one data
//! write and one device flush.
//!
//! Why not RocksDB: its write-ahead log grows with every write, so every synced write also
//! changes the file's size, and on ext4 `fdatasync` then writes the inode synchronously before
//! flushing the device: three I/Os in sequence instead of two. A lone durable write waits for
//! two such syncs in a row (the leader's, then a follower's), so that extra I/O was a large part
//! of a single client's write latency (see BENCHMARKS.md). Segments here are allocated whole
//! when created, so an append never changes a file's size.
//!
//! ## Format
//! A directory of segments named by their first index (`00000000000000000001.log`). Each is
//! allocated [`SEGMENT_BYTES`] (more if one append needs it) and starts with a header:
//!
//! ```text
//! magic "BATONLOG" | version u32 | seed u32 | first index u64 | reserved u64      (32 bytes)
//! record: length u32 | chain u32 | payload (length bytes)                    (little-endian)
//! ```
//!
//! Records follow one another; record `i` holds the entry at index `first + i`. A record's
//! `chain` is the CRC-32 of its length and payload, started from the previous record's chain
//! (from the header's `seed` for the first). The log ends at the first record that is all zeros
//! (unwritten space is zero), does not fit, or does not continue the chain. The chain is what
//! makes that end safe to find after a crash: the remains of a torn last write never continue
//! it, even once new records are written over their start. Truncation zeroes what it removes.
//!
//! ## Durability
//! `append` writes its records with one `pwrite` and returns after `fdatasync`. `truncate`
//! deletes later segments (and syncs the directory) before zeroing the removed records and
//! syncing. A new segment is synced, with its directory, before anything is written to it.
//! Only the last segment can end torn: every earlier one was synced before the next was made.
//! Purging removes whole segments; the caller first makes the purge point durable.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// Bytes allocated for a segment: a few tens of thousands of entries at Baton's entry sizes.
pub(crate) const SEGMENT_BYTES: u64 = 16 * 1024 * 1024;
const MAGIC: &[u8; 8] = b"BATONLOG";
const VERSION: u32 = 1;
const HEADER_BYTES: u64 = 32;
const RECORD_HEADER_BYTES: u64 = 8;

/// The chain value after a record of `payload`, continuing from `previous`.
fn chain(previous: u32, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new_with_initial(previous);
    hasher.update(&(payload.len() as u32).to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

fn corrupt(path: &Path, what: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("{}: {what}", path.display()))
}

struct Segment {
    path: PathBuf,
    file: Arc<File>,
    /// The index of its first record.
    first: u64,
    /// The chain value its first record continues.
    seed: u32,
    /// Where each record starts; record `i` is the entry at `first + i`.
    offsets: Vec<u64>,
    /// Where the next record goes.
    end: u64,
    /// The chain value after its last record.
    last_chain: u32,
    /// Bytes allocated.
    capacity: u64,
}

impl Segment {
    /// The index after its last record.
    fn next(&self) -> u64 {
        self.first + self.offsets.len() as u64
    }
}

/// The segments, shared by the writer and the replication tasks' readers.
#[derive(Default)]
struct Segments {
    /// In index order; appends go to the last.
    list: Vec<Segment>,
    /// Records at or below this index are purged: never read, even where their segment
    /// remains for the records after them.
    purged: Option<u64>,
}

impl Segments {
    /// The record spans (file, offset, length) holding indexes from `start` while below `end`.
    fn spans(&self, start: u64, end: u64) -> Vec<(Arc<File>, u64, u64)> {
        let start = start.max(self.purged.map_or(0, |p| p + 1));
        let mut spans = Vec::new();
        for segment in &self.list {
            let from = start.max(segment.first);
            let to = end.min(segment.next());
            if from >= to {
                continue;
            }
            for i in (from - segment.first)..(to - segment.first) {
                let at = segment.offsets[i as usize];
                let until = segment.offsets.get(i as usize + 1).copied().unwrap_or(segment.end);
                spans.push((segment.file.clone(), at, until - at));
            }
        }
        spans
    }
}

/// The log's segment files. One writer (`&mut self`); any number of [`LogFilesReader`]s.
pub(crate) struct LogFiles {
    dir: PathBuf,
    segments: Arc<RwLock<Segments>>,
}

/// Reads records while the writer appends.
#[derive(Clone)]
pub(crate) struct LogFilesReader {
    segments: Arc<RwLock<Segments>>,
}

fn read_spans(spans: Vec<(Arc<File>, u64, u64)>) -> io::Result<Vec<Vec<u8>>> {
    spans
        .into_iter()
        .map(|(file, at, length)| {
            let mut record = vec![0u8; length as usize];
            file.read_exact_at(&mut record, at)?;
            Ok(record.split_off(RECORD_HEADER_BYTES as usize))
        })
        .collect()
}

impl LogFilesReader {
    /// The payloads of the records from index `start` while below `end` (those present).
    pub(crate) fn read(&self, start: u64, end: u64) -> io::Result<Vec<Vec<u8>>> {
        let spans = self.segments.read().expect("never poisoned").spans(start, end);
        read_spans(spans)
    }
}

impl LogFiles {
    /// Opens the log in `dir` (created if missing), finding where each segment ends, and
    /// removes segments wholly at or below `purged`.
    pub(crate) fn open(dir: &Path, purged: Option<u64>) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut names: Vec<(u64, PathBuf)> = Vec::new();
        for item in std::fs::read_dir(dir)? {
            let path = item?.path();
            let first = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".log"))
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(first) = first {
                names.push((first, path));
            }
        }
        names.sort();
        let mut list: Vec<Segment> = Vec::new();
        let count = names.len();
        for (n, (_, path)) in names.into_iter().enumerate() {
            let is_last = n + 1 == count;
            let Some(segment) = scan(&path, is_last)? else {
                // Made just before a crash, before its header was synced: nothing was ever
                // written to it.
                std::fs::remove_file(&path)?;
                sync_dir(dir)?;
                continue;
            };
            if let Some(previous) = list.last() {
                if previous.next() > segment.first {
                    return Err(corrupt(&path, "overlaps the segment before it"));
                }
                if previous.next() == segment.first && previous.last_chain != segment.seed {
                    return Err(corrupt(&path, "does not continue the segment before it"));
                }
            }
            list.push(segment);
        }
        let mut files = Self { dir: dir.to_path_buf(), segments: Arc::default() };
        files.segments.write().expect("never poisoned").list = list;
        if let Some(purged) = purged {
            files.purge(purged)?;
        }
        Ok(files)
    }

    /// A reader sharing these segments.
    pub(crate) fn reader(&self) -> LogFilesReader {
        LogFilesReader { segments: self.segments.clone() }
    }

    /// The index and payload of the last record, if any.
    pub(crate) fn last(&self) -> io::Result<Option<(u64, Vec<u8>)>> {
        let Some(next) = self.next_index() else { return Ok(None) };
        let mut records = self.reader().read(next - 1, next)?;
        Ok(records.pop().map(|payload| (next - 1, payload)))
    }

    /// The index after the last record, if there is one (a segment made just before a crash
    /// may hold none yet).
    pub(crate) fn next_index(&self) -> Option<u64> {
        let segments = self.segments.read().expect("never poisoned");
        segments.list.iter().rev().find(|s| !s.offsets.is_empty()).map(Segment::next)
    }

    /// Appends records for consecutive indexes from `first`, synced before it returns. A
    /// `first` that does not follow the last record starts a new segment: openraft appends
    /// after a gap only once everything before it is purged.
    pub(crate) fn append(&mut self, first: u64, payloads: &[Vec<u8>]) -> io::Result<()> {
        let bytes: u64 = payloads.iter().map(|p| RECORD_HEADER_BYTES + p.len() as u64).sum::<u64>();
        let (continues, fits, seed) = {
            let segments = self.segments.read().expect("never poisoned");
            match segments.list.last() {
                Some(s) if s.next() == first => (true, s.end + bytes <= s.capacity, s.last_chain),
                Some(s) if first < s.next() => {
                    let e = format!("append at {first} over records up to {}", s.next() - 1);
                    return Err(io::Error::new(io::ErrorKind::InvalidInput, e));
                }
                _ => (false, false, 0),
            }
        };
        if !fits {
            let mut segments = self.segments.write().expect("never poisoned");
            // A segment made just before a crash and never written to is replaced by one
            // large enough, under the same name.
            if segments.list.last().is_some_and(|s| s.offsets.is_empty() && s.first == first) {
                segments.list.pop();
            }
            let segment = self.create(first, if continues { seed } else { 0 }, bytes)?;
            segments.list.push(segment);
        }
        let (file, at, mut chained) = {
            let segments = self.segments.read().expect("never poisoned");
            let s = segments.list.last().expect("a segment was just ensured");
            (s.file.clone(), s.end, s.last_chain)
        };
        let mut buffer = Vec::with_capacity(bytes as usize);
        let mut offsets = Vec::with_capacity(payloads.len());
        for payload in payloads {
            offsets.push(at + buffer.len() as u64);
            chained = chain(chained, payload);
            buffer.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            buffer.extend_from_slice(&chained.to_le_bytes());
            buffer.extend_from_slice(payload);
        }
        file.write_all_at(&buffer, at)?;
        file.sync_data()?;
        let mut segments = self.segments.write().expect("never poisoned");
        let s = segments.list.last_mut().expect("a segment was just ensured");
        s.offsets.extend(offsets);
        s.end = at + bytes;
        s.last_chain = chained;
        Ok(())
    }

    /// Removes the records from index `since` on, durably.
    pub(crate) fn truncate(&mut self, since: u64) -> io::Result<()> {
        let mut segments = self.segments.write().expect("never poisoned");
        // Later segments go first: if the process dies before the zeroing below, the log
        // still ends cleanly, at worst with the removed records of one segment still present,
        // as before a truncation that never ran.
        let mut removed = false;
        while segments.list.last().is_some_and(|s| s.first >= since) {
            let s = segments.list.pop().expect("just checked");
            std::fs::remove_file(&s.path)?;
            removed = true;
        }
        if removed {
            sync_dir(&self.dir)?;
        }
        let Some(s) = segments.list.last_mut() else { return Ok(()) };
        if since >= s.next() {
            return Ok(());
        }
        let keep = (since - s.first) as usize;
        let at = s.offsets[keep];
        // Every removed record is zeroed, not only the first: a new record identical to the
        // removed one would continue the chain into the records after it.
        s.file.write_all_at(&vec![0u8; (s.end - at) as usize], at)?;
        s.file.sync_data()?;
        s.last_chain = if keep == 0 { s.seed } else { read_chain(&s.file, s.offsets[keep - 1])? };
        s.offsets.truncate(keep);
        s.end = at;
        Ok(())
    }

    /// Removes the segments whose records are all at or below `upto`. The caller has already
    /// made `upto` durable as the purge point: records at or below it are never read again.
    pub(crate) fn purge(&mut self, upto: u64) -> io::Result<()> {
        let mut segments = self.segments.write().expect("never poisoned");
        segments.purged = segments.purged.max(Some(upto));
        let whole = segments.list.iter().take_while(|s| s.next() <= upto + 1).count();
        if whole == 0 {
            return Ok(());
        }
        for s in segments.list.drain(..whole) {
            std::fs::remove_file(&s.path)?;
        }
        sync_dir(&self.dir)
    }

    /// A new segment for records from `first`, continuing `seed`, with room for `bytes`.
    fn create(&self, first: u64, seed: u32, bytes: u64) -> io::Result<Segment> {
        let path = self.dir.join(format!("{first:020}.log"));
        let capacity = SEGMENT_BYTES.max(HEADER_BYTES + bytes);
        let file =
            OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path)?;
        // Allocated (and so sized) up front: appends never change the file's size. Where the
        // filesystem cannot allocate, a sparse file of the same size still reads as zeros.
        if rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, capacity).is_err() {
            file.set_len(capacity)?;
        }
        let mut header = [0u8; HEADER_BYTES as usize];
        header[..8].copy_from_slice(MAGIC);
        header[8..12].copy_from_slice(&VERSION.to_le_bytes());
        header[12..16].copy_from_slice(&seed.to_le_bytes());
        header[16..24].copy_from_slice(&first.to_le_bytes());
        file.write_all_at(&header, 0)?;
        file.sync_all()?;
        sync_dir(&self.dir)?;
        Ok(Segment {
            path,
            file: Arc::new(file),
            first,
            seed,
            offsets: Vec::new(),
            end: HEADER_BYTES,
            last_chain: seed,
            capacity,
        })
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The chain value stored in the record at `at`.
fn read_chain(file: &File, at: u64) -> io::Result<u32> {
    let mut header = [0u8; RECORD_HEADER_BYTES as usize];
    file.read_exact_at(&mut header, at)?;
    Ok(u32::from_le_bytes(header[4..8].try_into().expect("4 bytes")))
}

/// Reads a segment's header and finds its records. Only the last segment may end in a record
/// that breaks the chain (a write torn by a crash); in an earlier one that is corruption. The
/// last segment without a header yet is `None`.
fn scan(path: &Path, is_last: bool) -> io::Result<Option<Segment>> {
    let file = OpenOptions::new().read(true).write(true).open(path)?;
    let capacity = file.metadata()?.len();
    let mut reader = io::BufReader::with_capacity(1 << 20, &file);
    let mut header = [0u8; HEADER_BYTES as usize];
    let read = reader.read_exact(&mut header);
    if is_last && (read.is_err() || header == [0u8; HEADER_BYTES as usize]) {
        return Ok(None);
    }
    read.map_err(|_| corrupt(path, "no segment header"))?;
    if &header[..8] != MAGIC {
        return Err(corrupt(path, "not a Baton log segment"));
    }
    let version = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
    if version != VERSION {
        return Err(corrupt(path, format!("segment version {version} is not {VERSION}")));
    }
    let seed = u32::from_le_bytes(header[12..16].try_into().expect("4 bytes"));
    let first = u64::from_le_bytes(header[16..24].try_into().expect("8 bytes"));
    let mut offsets = Vec::new();
    let (mut end, mut last_chain) = (HEADER_BYTES, seed);
    let mut payload = Vec::new();
    loop {
        let mut record = [0u8; RECORD_HEADER_BYTES as usize];
        if end + RECORD_HEADER_BYTES > capacity || reader.read_exact(&mut record).is_err() {
            break;
        }
        let length = u64::from(u32::from_le_bytes(record[..4].try_into().expect("4 bytes")));
        let stored = u32::from_le_bytes(record[4..].try_into().expect("4 bytes"));
        if length == 0 && stored == 0 {
            break;
        }
        let fits = length > 0 && end + RECORD_HEADER_BYTES + length <= capacity;
        payload.resize(if fits { length as usize } else { 0 }, 0);
        if !fits
            || reader.read_exact(&mut payload).is_err()
            || chain(last_chain, &payload) != stored
        {
            if is_last {
                break;
            }
            return Err(corrupt(path, format!("a broken record at byte {end}")));
        }
        offsets.push(end);
        end += RECORD_HEADER_BYTES + length;
        last_chain = stored;
    }
    Ok(Some(Segment {
        path: path.to_path_buf(),
        file: Arc::new(file),
        first,
        seed,
        offsets,
        end,
        last_chain,
        capacity,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(index: u64) -> Vec<u8> {
        format!("entry {index}").repeat((index % 7 + 1) as usize).into_bytes()
    }

    /// Appends `count` records from index 1, each a third of a segment (two fit in one), and
    /// returns the record.
    fn append_big(files: &mut LogFiles, count: u64) -> Vec<u8> {
        let big = vec![7u8; (SEGMENT_BYTES / 3) as usize];
        for index in 1..=count {
            files.append(index, std::slice::from_ref(&big)).expect("append");
        }
        big
    }

    fn append_range(files: &mut LogFiles, from: u64, to: u64) {
        let payloads: Vec<Vec<u8>> = (from..to).map(payload).collect();
        files.append(from, &payloads).expect("append");
    }

    fn all(files: &LogFiles) -> Vec<Vec<u8>> {
        files.reader().read(0, u64::MAX).expect("read")
    }

    /// An empty log in a directory of its own.
    fn fresh() -> (tempfile::TempDir, LogFiles) {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = LogFiles::open(dir.path(), None).expect("open");
        (dir, files)
    }

    /// Closes `files` and opens the log in `dir` again, as a restarted node does.
    fn reopen(files: LogFiles, dir: &tempfile::TempDir, purged: Option<u64>) -> LogFiles {
        drop(files);
        LogFiles::open(dir.path(), purged).expect("reopen")
    }

    #[test]
    fn appended_records_read_back_after_reopening() {
        let (dir, mut files) = fresh();
        append_range(&mut files, 1, 50);
        append_range(&mut files, 50, 51);
        let files = reopen(files, &dir, None);
        assert_eq!(all(&files), (1..51).map(payload).collect::<Vec<_>>());
        assert_eq!(files.next_index(), Some(51));
        assert_eq!(files.last().expect("read"), Some((50, payload(50))));
    }

    #[test]
    fn a_segment_file_keeps_its_size_while_records_are_appended() {
        let (dir, mut files) = fresh();
        append_range(&mut files, 1, 2);
        let path = dir.path().join(format!("{:020}.log", 1));
        let size = std::fs::metadata(&path).expect("segment").len();
        append_range(&mut files, 2, 500);
        assert_eq!(std::fs::metadata(&path).expect("segment").len(), size);
        assert_eq!(size, SEGMENT_BYTES);
    }

    #[test]
    fn a_torn_last_write_ends_the_log_before_it() {
        let (dir, mut files) = fresh();
        append_range(&mut files, 1, 10);
        let (file, at) = {
            let s = files.segments.read().expect("lock");
            (s.list[0].file.clone(), s.list[0].offsets[9 - 1])
        };
        // Half of record 9's payload never reached the disk.
        file.write_all_at(&[0u8; 4], at + RECORD_HEADER_BYTES + 2).expect("tear");
        let mut files = reopen(files, &dir, None);
        assert_eq!(files.next_index(), Some(9));
        // The log goes on from there, and ends after the new records on the next opening.
        append_range(&mut files, 9, 12);
        let files = reopen(files, &dir, None);
        assert_eq!(all(&files), (1..12).map(payload).collect::<Vec<_>>());
    }

    #[test]
    fn records_after_a_truncation_never_come_back_even_when_new_ones_line_up_with_them() {
        let (dir, mut files) = fresh();
        append_range(&mut files, 1, 20);
        files.truncate(10).expect("truncate");
        assert_eq!(files.next_index(), Some(10));
        // The very record that was removed: the old record 11 follows it, exactly where it
        // was, and would continue its chain.
        files.append(10, &[payload(10)]).expect("append");
        let files = reopen(files, &dir, None);
        assert_eq!(files.next_index(), Some(11));
        assert_eq!(all(&files), (1..11).map(payload).collect::<Vec<_>>());
    }

    #[test]
    fn a_full_segment_is_followed_by_a_new_one_and_purge_removes_whole_segments() {
        let (dir, mut files) = fresh();
        let big = append_big(&mut files, 7);
        let segments = || std::fs::read_dir(dir.path()).expect("dir").count();
        assert_eq!(segments(), 4, "two records fit a segment");
        files.purge(4).expect("purge");
        assert_eq!(segments(), 2, "segments [1, 2] and [3, 4] are gone");
        assert_eq!(files.reader().read(5, 8).expect("read").len(), 3);
        files.truncate(6).expect("truncate into the middle of a segment");
        let files = reopen(files, &dir, Some(4));
        assert_eq!(files.next_index(), Some(6));
        assert_eq!(files.reader().read(5, 8).expect("read"), vec![big.clone()]);
    }

    #[test]
    fn every_range_reads_exactly_its_records_across_segment_boundaries() {
        let (dir, mut files) = fresh();
        // Odd indexes a third of a segment, even ones a few bytes: segments [1, 4], [5, 8], [9].
        let record = |index: u64| match index % 2 {
            1 => vec![index as u8; (SEGMENT_BYTES / 3) as usize],
            _ => payload(index),
        };
        for index in 1..=9 {
            files.append(index, &[record(index)]).expect("append");
        }
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 3);
        for start in 0..=10 {
            for end in start..=11 {
                let expected: Vec<Vec<u8>> = (start.max(1)..end.min(10)).map(record).collect();
                assert_eq!(
                    files.reader().read(start, end).expect("read"),
                    expected,
                    "[{start}, {end})"
                );
            }
        }
    }

    #[test]
    fn an_append_after_a_gap_starts_a_fresh_segment() {
        let (dir, mut files) = fresh();
        append_range(&mut files, 1, 5);
        // A snapshot covering up to 100 was installed: everything up to it is purged.
        files.purge(100).expect("purge");
        assert_eq!(files.next_index(), None);
        append_range(&mut files, 101, 103);
        let files = reopen(files, &dir, Some(100));
        assert_eq!(
            files.reader().read(0, u64::MAX).expect("read"),
            vec![payload(101), payload(102)]
        );
    }

    #[test]
    fn a_segment_made_just_before_a_crash_without_its_header_is_dropped() {
        let (dir, mut files) = fresh();
        append_range(&mut files, 1, 4);
        drop(files);
        let blank = dir.path().join(format!("{:020}.log", 4));
        File::create(&blank).expect("create").set_len(SEGMENT_BYTES).expect("size");
        let mut files = LogFiles::open(dir.path(), None).expect("reopen");
        assert!(!blank.exists());
        append_range(&mut files, 4, 6);
        assert_eq!(all(&files), (1..6).map(payload).collect::<Vec<_>>());
    }

    #[test]
    fn an_append_too_large_for_an_unwritten_segment_replaces_it() {
        let (dir, mut files) = fresh();
        append_range(&mut files, 1, 4);
        // A crash right after the next segment was made, before anything was written to it.
        let seed = files.segments.read().expect("lock").list[0].last_chain;
        drop(files.create(4, seed, 0).expect("create"));
        let mut files = reopen(files, &dir, None);
        let huge = vec![9u8; SEGMENT_BYTES as usize];
        files.append(4, std::slice::from_ref(&huge)).expect("append");
        let files = reopen(files, &dir, None);
        assert_eq!(files.reader().read(4, 5).expect("read"), vec![huge]);
        assert_eq!(files.next_index(), Some(5));
    }

    #[test]
    fn a_broken_record_in_an_earlier_segment_is_reported_not_skipped() {
        let (dir, mut files) = fresh();
        append_big(&mut files, 3);
        let (file, at) = {
            let s = files.segments.read().expect("lock");
            (s.list[0].file.clone(), s.list[0].offsets[1])
        };
        file.write_all_at(&[1u8; 4], at + RECORD_HEADER_BYTES + 100).expect("flip bytes");
        drop(files);
        let error = LogFiles::open(dir.path(), None).err().expect("refused");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{error}");
    }
}
