//! Guest-physical memory as the monitor sees it: RAM from guest-physical address 0 up to
//! the VM's size, mapped into the vmx world. Every access is bounds-checked: addresses come
//! from the guest or from an image file, both hostile.

use core::fmt;

/// An access outside guest RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfBounds {
    /// First guest-physical address of the access.
    pub gpa: u64,
    /// Its length in bytes.
    pub len: u64,
    /// Bytes of guest RAM.
    pub size: u64,
}

impl fmt::Display for OutOfBounds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "guest-physical range {:#x}..{:#x} is outside guest RAM (0..{:#x})",
            self.gpa,
            self.gpa.saturating_add(self.len),
            self.size
        )
    }
}

/// Guest RAM, contiguous from guest-physical 0.
pub trait GuestMemory {
    /// Bytes of RAM.
    fn size(&self) -> u64;
    /// Reads `buf.len()` bytes at `gpa`.
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), OutOfBounds>;
    /// Writes `data` at `gpa`.
    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), OutOfBounds>;

    /// Reads a little-endian u64.
    fn read_u64(&self, gpa: u64) -> Result<u64, OutOfBounds> {
        let mut bytes = [0; 8];
        self.read(gpa, &mut bytes)?;
        Ok(u64::from_le_bytes(bytes))
    }

    /// Reads a little-endian u32.
    fn read_u32(&self, gpa: u64) -> Result<u32, OutOfBounds> {
        let mut bytes = [0; 4];
        self.read(gpa, &mut bytes)?;
        Ok(u32::from_le_bytes(bytes))
    }

    /// Fills `len` bytes at `gpa` with `byte`.
    fn fill_bytes(&mut self, gpa: u64, len: u64, byte: u8) -> Result<(), OutOfBounds> {
        let chunk = [byte; 256];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(chunk.len() as u64);
            self.write(gpa + done, &chunk[..n as usize])?;
            done += n;
        }
        Ok(())
    }
}

/// Checks `gpa..gpa+len` against `size` and returns it as a `usize` range.
pub fn check(gpa: u64, len: u64, size: u64) -> Result<core::ops::Range<usize>, OutOfBounds> {
    let error = OutOfBounds { gpa, len, size };
    let end = gpa.checked_add(len).ok_or(error)?;
    if end > size {
        return Err(error);
    }
    Ok(gpa as usize..end as usize)
}

impl GuestMemory for [u8] {
    fn size(&self) -> u64 {
        self.len() as u64
    }

    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), OutOfBounds> {
        let range = check(gpa, buf.len() as u64, self.size())?;
        buf.copy_from_slice(&self[range]);
        Ok(())
    }

    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), OutOfBounds> {
        let range = check(gpa, data.len() as u64, self.size())?;
        self[range].copy_from_slice(data);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accesses_are_bounds_checked() {
        let mut ram = [0u8; 64];
        let memory: &mut [u8] = &mut ram;
        memory.write(60, &[1, 2, 3, 4]).unwrap();
        assert_eq!(memory.read_u32(60).unwrap(), 0x0403_0201);
        let error = memory.write(61, &[0; 4]).unwrap_err();
        assert_eq!(
            error,
            OutOfBounds {
                gpa: 61,
                len: 4,
                size: 64
            }
        );
        assert!(memory.read_u64(u64::MAX - 3).is_err());
        memory.fill_bytes(0, 64, 0xaa).unwrap();
        assert!(memory.fill_bytes(1, 64, 0).is_err());
    }
}
