//! Gives the heap's free pages back to the system. glibc keeps what was freed
//! in its arenas (one per thread that allocated): start-up alone (the OpenAPI
//! schemas of the routes, the CA store of each cloud's clients) peaks at about
//! 1.7 MB and leaves about 0.5 MB in use, yet the pages stayed resident. After
//! each reaper pass, the first one right after start-up, an idle daemon's RSS
//! is what it holds, not what it once needed (`make bench-versus` measures it).
//!
//! Written here, not taken from a crate: it is one call of glibc's
//! `malloc_trim`, which the `libc` crate (already a dependency) declares.

/// Returns the free pages of every malloc arena to the system.
pub(crate) fn release_free_pages() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers; it walks glibc's own arenas under
    // their locks, and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn releasing_free_pages_leaves_live_allocations_intact() {
        let live: Vec<Vec<u8>> = (0..64).map(|i| vec![i as u8; 64 * 1024]).collect();
        drop((0..256).map(|_| vec![0u8; 64 * 1024]).collect::<Vec<_>>());
        super::release_free_pages();
        assert!(live
            .iter()
            .enumerate()
            .all(|(i, v)| v.iter().all(|&b| b == i as u8)));
    }
}
