//! Giving freed memory back to the system. glibc keeps what a thread freed in that thread's
//! malloc arena for reuse; a model or encoder thread that ends (its instance replaced by a
//! reload) leaves its whole model's worth there, and each reload starts new threads with new
//! arenas, so the resident size climbed with reloads (issue 17's soak: 1.3x over 20 reloads)
//! although nothing leaked.

/// Returns the free memory of every malloc arena to the system (`malloc_trim`). Costs a walk
/// of the heaps: call it when a large amount was just freed, not per request.
pub fn release_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointer and only works on the allocator's own state.
    unsafe {
        libc::malloc_trim(0);
    }
}
