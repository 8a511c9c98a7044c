//! A hint to the processor to bring memory the redactor reads next into the cache: the
//! first pass looks at one window every stride (~30 bytes), a pattern the hardware
//! prefetcher follows poorly across pages (measured: ~10% of the bench's throughput).
//! The crate's one `unsafe` block.

/// Asks for the cache line of `text[at]` (nothing if `at` is past the end).
#[inline]
pub(crate) fn read(text: &[u8], at: usize) {
    #[cfg(target_arch = "x86_64")]
    if let Some(byte) = text.get(at) {
        #[allow(unsafe_code)]
        // SAFETY: `_mm_prefetch` only hints the cache; it never faults and reads nothing
        // the program sees, and the address is in `text` anyway. SSE is part of x86_64's
        // baseline, so the instruction exists on every processor this code runs on.
        unsafe {
            core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
                std::ptr::from_ref(byte).cast(),
            );
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (text, at);
}
