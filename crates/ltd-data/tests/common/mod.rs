//! Builders for real-format CIFAR files and archives, written byte by byte so that tests can
//! bend any field, and a per-thread allocation meter to bound the memory a read takes.

#![allow(dead_code)] // each test binary uses its own part

pub mod alloc_meter;

use std::io::Write;

use flate2::write::GzEncoder;
use flate2::Compression;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Bytes per CIFAR-10 record (1 label byte + 3072 pixels) and per CIFAR-100 record.
pub const TEN_RECORD: usize = 3073;
pub const HUNDRED_RECORD: usize = 3074;

/// `n` random CIFAR-10 records (labels 0..10).
pub fn cifar10_records(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut bytes = vec![0u8; n * TEN_RECORD];
    for record in bytes.chunks_exact_mut(TEN_RECORD) {
        rng.fill(&mut record[..]);
        record[0] = rng.random_range(0..10);
    }
    bytes
}

/// `n` random CIFAR-100 records (coarse 0..20, fine 0..100).
pub fn cifar100_records(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut bytes = vec![0u8; n * HUNDRED_RECORD];
    for record in bytes.chunks_exact_mut(HUNDRED_RECORD) {
        rng.fill(&mut record[..]);
        record[0] = rng.random_range(0..20);
        record[1] = rng.random_range(0..100);
    }
    bytes
}

/// One tar entry: a 512-byte ustar header whose every field the test controls, then data.
pub struct Member {
    pub path: String,
    /// The type flag byte: b'0' regular file, b'2' symlink, b'1' hard link, b'5' folder,
    /// b'L' GNU long name, ...
    pub kind: u8,
    /// The size the header declares (octal when it fits, GNU base-256 otherwise).
    pub declared: u64,
    pub data: Vec<u8>,
    pub link: String,
}

impl Member {
    /// A regular file whose header declares its true size.
    pub fn file(path: &str, data: Vec<u8>) -> Self {
        Self {
            path: path.into(),
            kind: b'0',
            declared: data.len() as u64,
            data,
            link: String::new(),
        }
    }

    /// The 512-byte header, with a correct checksum.
    pub fn header(&self) -> [u8; 512] {
        let mut h = [0u8; 512];
        let path = self.path.as_bytes();
        h[..path.len().min(100)].copy_from_slice(&path[..path.len().min(100)]);
        h[100..107].copy_from_slice(b"0000644");
        h[108..115].copy_from_slice(b"0001750");
        h[116..123].copy_from_slice(b"0001750");
        set_size(&mut h, self.declared);
        h[136..147].copy_from_slice(b"14715453145");
        h[156] = self.kind;
        let link = self.link.as_bytes();
        h[157..157 + link.len().min(100)].copy_from_slice(&link[..link.len().min(100)]);
        h[257..263].copy_from_slice(b"ustar ");
        h[263..265].copy_from_slice(b" \0");
        set_checksum(&mut h);
        h
    }
}

/// Writes `size` into a header's 12-byte size field: 11 octal digits when it fits, else the GNU
/// base-256 form (high bit set, big-endian).
pub fn set_size(h: &mut [u8; 512], size: u64) {
    let field = &mut h[124..136];
    if size < 8u64.pow(11) {
        field.copy_from_slice(format!("{size:011o}\0").as_bytes());
    } else {
        field.fill(0);
        field[4..].copy_from_slice(&size.to_be_bytes());
        field[0] = 0x80;
    }
}

/// Recomputes a header's checksum (the sum of its bytes with the checksum field as spaces).
pub fn set_checksum(h: &mut [u8; 512]) {
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

/// A tar stream of `members`: each header, its data padded to 512 bytes, two zero blocks.
pub fn tar(members: &[Member]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in members {
        out.extend_from_slice(&m.header());
        out.extend_from_slice(&m.data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// The official CIFAR-10 archive's layout (folder entry, five batches, test batch, the text
/// files), with `train_per_file` and `test` records per file.
pub fn cifar10_members(train_per_file: usize, test: usize, seed: u64) -> Vec<Member> {
    let mut members = vec![Member {
        path: "cifar-10-batches-bin/".into(),
        kind: b'5',
        declared: 0,
        data: Vec::new(),
        link: String::new(),
    }];
    for i in 1..=5 {
        members.push(Member::file(
            &format!("cifar-10-batches-bin/data_batch_{i}.bin"),
            cifar10_records(train_per_file, seed + i),
        ));
    }
    members.push(Member::file(
        "cifar-10-batches-bin/test_batch.bin",
        cifar10_records(test, seed),
    ));
    members.push(Member::file(
        "cifar-10-batches-bin/batches.meta.txt",
        b"airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n".to_vec(),
    ));
    members.push(Member::file(
        "cifar-10-batches-bin/readme.html",
        b"<meta HTTP-EQUIV=\"REFRESH\" content=\"0\">\n".to_vec(),
    ));
    members
}

/// The official CIFAR-100 archive's layout.
pub fn cifar100_members(train: usize, test: usize, seed: u64) -> Vec<Member> {
    vec![
        Member::file(
            "cifar-100-binary/coarse_label_names.txt",
            b"aquatic_mammals\n".to_vec(),
        ),
        Member::file("cifar-100-binary/train.bin", cifar100_records(train, seed)),
        Member::file(
            "cifar-100-binary/test.bin",
            cifar100_records(test, seed + 1),
        ),
    ]
}
