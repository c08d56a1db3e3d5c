//! Malformed input: mutated valid messages (truncated, wrong lengths, unknown types and
//! experimenters, huge lengths, random bytes) and mutated flow text must give errors, never a
//! panic, and decoding must never make an allocation out of proportion to its input.
//!
//! `OPENFLOW_FUZZ_ITERS=1000000 cargo test --release -p openflow --test fuzz -- --nocapture`
//! runs a million inputs (the default is a quick 30 000 for CI).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use openflow::flow::Flow;
use openflow::message::Message;
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;

/// Records the largest single allocation made while tracking is on (per thread).
struct Tracking;

static LARGEST: AtomicUsize = AtomicUsize::new(0);
thread_local! {
    static ON: Cell<bool> = const { Cell::new(false) };
}

unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if ON.with(Cell::get) {
            LARGEST.fetch_max(l.size(), Ordering::Relaxed);
        }
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        if ON.with(Cell::get) {
            LARGEST.fetch_max(new, Ordering::Relaxed);
        }
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static GLOBAL: Tracking = Tracking;

/// xorshift64*: deterministic, seedable, dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn corpus() -> (Vec<Vec<u8>>, Vec<String>) {
    let mut runner = TestRunner::deterministic();
    let strat = common::strategies::message();
    let mut bins = Vec::new();
    for i in 0..400u32 {
        let m = strat.new_tree(&mut runner).expect("tree").current();
        bins.push(m.encode(i));
    }
    let mut texts: Vec<String> = common::cases::FLOWS.iter().map(|s| s.to_string()).collect();
    for (i, t) in common::cases::FLOWS.iter().enumerate() {
        let f: Flow = t.parse().expect("case");
        bins.push(Message::FlowMod(openflow::FlowMod::add(f)).encode(i as u32));
    }
    let fs = common::strategies::flow(common::strategies::text_match());
    for _ in 0..200 {
        texts.push(
            fs.new_tree(&mut runner)
                .expect("tree")
                .current()
                .to_string(),
        );
    }
    (bins, texts)
}

fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut b = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let n = b.len().max(1);
        match rng.below(10) {
            0 => b.truncate(rng.below(n)),
            1 if !b.is_empty() => {
                let i = rng.below(n);
                b[i] ^= 1 << rng.below(8);
            }
            2 if !b.is_empty() => {
                let i = rng.below(n);
                b[i] = [0x00, 0xff, 0x80, 0x7f, 0x08, 0x10][rng.below(6)];
            }
            3 if b.len() >= 2 => {
                // A length-like field: huge, zero, or slightly off.
                let i = rng.below(b.len() - 1);
                let v: u16 =
                    [0xffff, 0, 4, 8, 0x7ff8, (b.len() as u16).wrapping_add(8)][rng.below(6)];
                b[i..i + 2].copy_from_slice(&v.to_be_bytes());
            }
            4 => {
                let i = rng.below(n + 1).min(b.len());
                let extra: Vec<u8> = (0..rng.below(24)).map(|_| rng.next() as u8).collect();
                b.splice(i..i, extra);
            }
            5 => b.extend((0..rng.below(64)).map(|_| rng.next() as u8)),
            6 => {
                let cut = rng.below(other.len() + 1);
                b.extend_from_slice(&other[cut..]);
            }
            7 if b.len() >= 16 => {
                // Unknown experimenter / subtype.
                let i = 8 + rng.below(b.len() - 12);
                let v = rng.next() as u32;
                b[i..i + 4].copy_from_slice(&v.to_be_bytes());
            }
            8 if b.len() >= 2 => b[1] = rng.below(40) as u8,
            _ => b = (0..rng.below(128)).map(|_| rng.next() as u8).collect(),
        }
    }
    // Usually keep the header length consistent so that decoding goes past the header.
    if b.len() >= 4 && rng.below(5) != 0 {
        let l = u16::try_from(b.len()).unwrap_or(u16::MAX);
        b[2..4].copy_from_slice(&l.to_be_bytes());
        b.truncate(usize::from(l));
    }
    b
}

fn mutate_text(rng: &mut Rng, s: &str) -> String {
    let mut c: Vec<char> = s.chars().collect();
    for _ in 0..1 + rng.below(3) {
        let n = c.len().max(1);
        match rng.below(5) {
            0 => c.truncate(rng.below(n)),
            1 if !c.is_empty() => {
                c.remove(rng.below(n));
            }
            2 => {
                let i = rng.below(n + 1).min(c.len());
                c.insert(
                    i,
                    [
                        '(', ')', '[', ']', ',', '=', ':', '/', '-', '>', '.', 'x', '9', ' ', 'é',
                    ][rng.below(15)],
                );
            }
            3 if !c.is_empty() => {
                let i = rng.below(n);
                c[i] = char::from(b'0' + rng.below(10) as u8);
            }
            _ => {
                let i = rng.below(n + 1).min(c.len());
                c.splice(i..i, "99999999999999999999999".chars());
            }
        }
    }
    c.into_iter().collect()
}

#[test]
fn malformed_input_never_panics() {
    let iters: usize = std::env::var("OPENFLOW_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30_000);
    let (bins, texts) = corpus();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ iters as u64);
    let (mut ok, mut err, mut worst) = (0usize, 0usize, 0f64);
    for i in 0..iters {
        let a = &bins[rng.below(bins.len())];
        let b = &bins[rng.below(bins.len())];
        let input = mutate(&mut rng, a, b);
        LARGEST.store(0, Ordering::Relaxed);
        ON.with(|o| o.set(true));
        let r = Message::decode(&input);
        ON.with(|o| o.set(false));
        let largest = LARGEST.load(Ordering::Relaxed);
        let limit = 64 * input.len() + 4096;
        assert!(
            largest <= limit,
            "allocation of {largest} bytes decoding {} bytes: {input:02x?}",
            input.len()
        );
        worst = worst.max(largest as f64 / (input.len().max(1)) as f64);
        match r {
            Ok((xid, m)) => {
                ok += 1;
                // Whatever decodes must also print (and its flows print and parse) without panicking.
                let _ = openflow::print::ofp_print(xid, &m);
                if let Message::FlowMod(fm) = &m {
                    let _ = fm.flow.to_string().parse::<Flow>();
                }
            }
            Err(_) => err += 1,
        }
        if i % 4 == 0 {
            let k = rng.below(texts.len());
            let t = mutate_text(&mut rng, &texts[k]);
            let _ = t.parse::<Flow>();
        }
    }
    println!(
        "fuzzed {iters} binary inputs ({ok} decoded, {err} rejected) and {} text inputs; largest allocation {worst:.1}x the input",
        iters.div_ceil(4)
    );
}
