//! What happens to the memory of freed tensors.
//!
//! A CPU backend allocates every tensor from the system allocator, megabytes at a time and
//! thousands of times per second. glibc's malloc gives large freed blocks back to the kernel
//! (`munmap`, or trimming the heap's top) and takes them again on the next allocation, so every
//! attack step pays for page faults on memory it had a moment ago: APGD-T on a WRN-16-2 made
//! 1.7 million page faults in 12 images' worth of work.

use std::sync::OnceLock;

/// The largest block glibc will take from its heap rather than map on its own (its ceiling for
/// `M_MMAP_THRESHOLD` on 64-bit targets).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: i32 = 32 << 20;

/// Freed memory kept at the top of the heap before glibc trims it (1 GiB).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: i32 = 1 << 30;

/// Makes the allocator keep freed blocks of up to 32 MiB for reuse instead of returning them to
/// the kernel; a program's peak memory is unchanged, its resident memory stays near that peak.
/// Measured on APGD-T against a WRN-16-2 (12 images, 2 cores): page faults 1.7 million →
/// 8 thousand, CPU time −28 %. On glibc (Linux) it sets `M_MMAP_THRESHOLD` and
/// `M_TRIM_THRESHOLD` once per process and returns whether glibc took both; elsewhere it does
/// nothing and returns `false`. Call it at the start of a program that runs a CPU backend (the
/// examples do, through `ltd::backend::device`).
pub fn retain_freed_memory() -> bool {
    static TAKEN: OnceLock<bool> = OnceLock::new();
    *TAKEN.get_or_init(tune)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune() -> bool {
    // SAFETY: `mallopt` only changes glibc's allocation parameters, under its own lock.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune() -> bool {
    false
}

#[cfg(test)]
mod tests {
    #[test]
    fn glibc_takes_the_settings_and_a_second_call_changes_nothing() {
        let first = super::retain_freed_memory();
        assert_eq!(first, cfg!(all(target_os = "linux", target_env = "gnu")));
        assert_eq!(super::retain_freed_memory(), first);
    }
}
