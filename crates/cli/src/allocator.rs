//! The binary's memory allocators: mimalloc for Rust's allocations, glibc's for the C
//! libraries' (SQLite's page cache and statements), both set to give freed pages back.
//!
//! What a node keeps at rest grows with its tasks, and a takeover of thousands of them
//! allocates a burst of short-lived memory among those long-lived pieces. glibc's allocator
//! kept the pages of that burst resident for good: 10,000 idle daily tasks held 89 MB, of
//! which 16 MB in use, the free space scattered among live allocations where trimming
//! cannot reach it. mimalloc keeps allocations of one size together in pages of their own
//! and returns a page once it is empty: the same node holds about 40 MB (`rota bench idle`,
//! README). Programs that embed the library choose their own allocator.

use std::alloc::{GlobalAlloc, Layout};

use libmimalloc_sys as mi;

/// `mi_option_purge_delay` and `mi_option_allow_thp` in mimalloc 3's `mi_option_e`
/// (checked by a test below).
const PURGE_DELAY: mi::mi_option_t = 15;
const ALLOW_THP: mi::mi_option_t = 43;

/// How often the C libraries' freed memory is given back to the system.
const C_TRIM_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

pub struct Mimalloc;

// SAFETY: each method hands the layout's size and alignment to the mimalloc function for
// aligned memory, which returns null on failure, as `GlobalAlloc` requires; `dealloc` and
// `realloc` get pointers that mimalloc returned.
unsafe impl GlobalAlloc for Mimalloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        mi::mi_free(ptr.cast());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        mi::mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast()
    }
}

/// Called first thing in `main`, before the runtime's threads start.
///
/// - mimalloc gives pages back as soon as they empty, not after a delay: it purges delayed
///   pages only when the thread allocates again, so an idle node kept its takeover's pages.
/// - No transparent huge pages for this process: one live allocation kept a 2 MiB page
///   resident (10,000 idle tasks: 55 MB instead of 40). mimalloc disables them with `prctl`
///   only when its option is off at its start, which comes before `main`; its option alone
///   is not enough. A task's command gets them back (`kinds/command.rs`).
/// - glibc, which serves the C libraries: one arena for every thread (each thread's arena
///   kept pages of its own pinned), and allocations of 128 KiB or more mapped on their own
///   and returned when freed (glibc raises that threshold after the first such buffer is
///   freed, and from then on puts them among the small long-lived ones).
pub fn tune() {
    // SAFETY: these set tuning options of the allocators and of this process's memory
    // mappings; any value of each is valid.
    unsafe {
        mi::mi_option_set(PURGE_DELAY, 0);
        mi::mi_option_set(ALLOW_THP, 0);
        #[cfg(target_os = "linux")]
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

/// glibc keeps what the C libraries freed (SQLite's statements and pages after a takeover
/// of thousands of tasks) in its arena, where it counts as resident. Now and then, give the
/// free pages back (a few milliseconds of CPU each time).
pub fn spawn_c_trim() -> tokio::task::JoinHandle<()> {
    tokio::spawn(async {
        let mut every = tokio::time::interval(C_TRIM_EVERY);
        loop {
            every.tick().await;
            #[cfg(all(target_os = "linux", target_env = "gnu"))]
            // SAFETY: malloc_trim only releases free memory of glibc's own arenas.
            unsafe {
                libc::malloc_trim(0);
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_options_set_are_the_ones_named() {
        // Their defaults in this build (purge delay 1000 ms, huge pages allowed) prove the
        // indexes name them: an upgrade of mimalloc that renumbered its options fails here.
        // SAFETY: reads options.
        unsafe {
            assert_eq!(mi::mi_option_get(PURGE_DELAY), 1000);
            assert_eq!(mi::mi_option_get(ALLOW_THP), 1);
        }
    }
}
