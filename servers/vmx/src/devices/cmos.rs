//! The MC146818 real-time clock and its 128 bytes of CMOS RAM (index 0x70, data 0x71).
//!
//! The clock is the Unix time given at construction plus elapsed guest time (`now_ns`),
//! shifted by whatever the guest sets. Time registers are rendered on every read in the
//! format status register B asks for (BCD or binary, 12 or 24 hours); a guest that sets the
//! clock (with B.SET held, or by writing a register directly) moves the clock's offset.
//! Status A's update-in-progress bit is derived from guest time (set in the last 244 µs of
//! each second), so it can never stay stuck. The memory-size bytes the BIOS would leave
//! behind are filled in from the RAM layout.
//!
//! Not modelled: alarm, periodic and update-ended interrupts (register C always reads 0)
//! and the upper 128-byte bank.

/// Index register port.
pub const INDEX_PORT: u16 = 0x70;
/// Data register port.
pub const DATA_PORT: u16 = 0x71;

const SECONDS: u8 = 0x00;
const MINUTES: u8 = 0x02;
const HOURS: u8 = 0x04;
const WEEKDAY: u8 = 0x06;
const DAY: u8 = 0x07;
const MONTH: u8 = 0x08;
const YEAR: u8 = 0x09;
const STATUS_A: u8 = 0x0a;
const STATUS_B: u8 = 0x0b;
const STATUS_C: u8 = 0x0c;
const STATUS_D: u8 = 0x0d;
const CENTURY: u8 = 0x32;

const A_UPDATE_IN_PROGRESS: u8 = 1 << 7;
/// 32.768 kHz time base, 1024 Hz periodic rate: what a BIOS leaves in register A.
const A_DEFAULT: u8 = 0x26;
const B_SET: u8 = 1 << 7;
const B_UPDATE_INTERRUPT: u8 = 1 << 4;
const B_BINARY: u8 = 1 << 2;
const B_24_HOUR: u8 = 1 << 1;
const D_VALID_RAM: u8 = 1 << 7;
const HOUR_PM: u8 = 1 << 7;

/// How long before each second's update UIP reads 1 (244 µs, the chip's warning time).
const UIP_WINDOW_NS: u64 = 244_000;
const NS_PER_S: u64 = 1_000_000_000;
const SECONDS_PER_DAY: i64 = 86_400;

/// The clock registers, all rendered from the current time.
const TIME_REGISTERS: [u8; 8] = [SECONDS, MINUTES, HOURS, WEEKDAY, DAY, MONTH, YEAR, CENTURY];

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// A calendar date and time of day (UTC).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DateTime {
    /// Full year, e.g. 2023.
    pub year: i64,
    /// 1–12.
    pub month: u8,
    /// 1–31.
    pub day: u8,
    /// 0–23.
    pub hour: u8,
    /// 0–59.
    pub minute: u8,
    /// 0–59.
    pub second: u8,
    /// 1 (Sunday) – 7 (Saturday), as the RTC counts.
    pub weekday: u8,
}

/// The civil (proleptic Gregorian) date `days` days after 1970-01-01: `(year, month, day)`.
///
/// Works in 400-year eras, each exactly 146 097 days long, with years that begin on
/// 1 March so the leap day falls at the end of the year.
pub fn civil_from_days(days: i64) -> (i64, u8, u8) {
    // Shift the epoch to 0000-03-01, which begins an era.
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097); // 0..=146_096
    // Year of the era: 365 days a year, less a day every 4 years, plus one every 100,
    // less one again at the era's last day.
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // Months from March, with 153 days in each five-month run (31+30+31+30+31).
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u8;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u8;
    let year = era * 400 + year_of_era + i64::from(month <= 2);
    (year, month, day)
}

/// Days from 1970-01-01 to the civil date `year-month-day` (the inverse of
/// [`civil_from_days`]; `month` 1–12, `day` 1–31).
pub fn days_from_civil(year: i64, month: u8, day: u8) -> i64 {
    let month = i64::from(month.clamp(1, 12));
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month_from_march = if month > 2 { month - 3 } else { month + 9 };
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date and time `unix_s` seconds after the Unix epoch.
pub fn datetime_from_unix(unix_s: i64) -> DateTime {
    let days = unix_s.div_euclid(SECONDS_PER_DAY);
    let second_of_day = unix_s.rem_euclid(SECONDS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    DateTime {
        year,
        month,
        day,
        hour: (second_of_day / 3600) as u8,
        minute: (second_of_day / 60 % 60) as u8,
        second: (second_of_day % 60) as u8,
        // 1970-01-01 was a Thursday (day 5 counting from Sunday = 1).
        weekday: ((days + 4).rem_euclid(7) + 1) as u8,
    }
}

fn to_bcd(value: u8) -> u8 {
    ((value / 10 % 10) << 4) | (value % 10)
}

fn from_bcd(value: u8) -> u8 {
    (value >> 4) * 10 + (value & 0x0f)
}

/// The emulated RTC and CMOS RAM.
#[derive(Clone, Debug)]
pub struct Cmos {
    index: u8,
    nmi_disabled: bool,
    ram: [u8; 128],
    /// Unix time at guest time 0, plus the guest's adjustments.
    base_unix_s: i64,
}

impl Cmos {
    /// A CMOS whose clock reads `unix_time_s` at guest time 0 and whose memory bytes
    /// describe `ram_below_4g` bytes of RAM from address 0 and `ram_above_4g` bytes from
    /// 4 GiB.
    pub fn new(unix_time_s: u64, ram_below_4g: u64, ram_above_4g: u64) -> Self {
        let mut cmos = Self {
            index: 0,
            nmi_disabled: false,
            ram: [0; 128],
            base_unix_s: i64::try_from(unix_time_s).unwrap_or(i64::MAX / 2),
        };
        cmos.ram[usize::from(STATUS_A)] = A_DEFAULT;
        cmos.ram[usize::from(STATUS_B)] = B_24_HOUR;
        cmos.fill_memory_sizes(ram_below_4g, ram_above_4g);
        cmos
    }

    fn fill_memory_sizes(&mut self, below_4g: u64, above_4g: u64) {
        let mut put_le = |index: usize, value: u64, bytes: usize| {
            for (i, byte) in value.to_le_bytes().iter().take(bytes).enumerate() {
                self.ram[index + i] = *byte;
            }
        };
        put_le(0x15, 640, 2);
        let extended_kib = (below_4g.saturating_sub(MIB) / KIB).min(0xffff);
        put_le(0x17, extended_kib, 2);
        put_le(0x30, extended_kib, 2);
        let above_16m = (below_4g.saturating_sub(16 * MIB) / (64 * KIB)).min(0xffff);
        put_le(0x34, above_16m, 2);
        let high = (above_4g / (64 * KIB)).min(0xff_ffff);
        put_le(0x5b, high, 3);
        // The standard checksum over 0x10–0x2d, big-endian at 0x2e.
        let sum: u16 = self.ram[0x10..=0x2d].iter().map(|&b| u16::from(b)).sum();
        self.ram[0x2e..=0x2f].copy_from_slice(&sum.to_be_bytes());
    }

    /// Whether the guest has disabled NMIs (bit 7 of the last index write).
    pub fn nmi_disabled(&self) -> bool {
        self.nmi_disabled
    }

    /// Reads port 0x70 + `offset`: the index register is write-only (0xff), 0x71 is data.
    pub fn read(&mut self, offset: u8, now_ns: u64) -> u8 {
        if offset != 1 {
            return 0xff;
        }
        let index = self.index;
        let b = self.ram[usize::from(STATUS_B)];
        match index {
            _ if TIME_REGISTERS.contains(&index) && b & B_SET == 0 => {
                self.render(self.unix_time(now_ns), index)
            }
            STATUS_A => {
                let updating = b & B_SET == 0 && now_ns % NS_PER_S >= NS_PER_S - UIP_WINDOW_NS;
                (self.ram[usize::from(index)] & !A_UPDATE_IN_PROGRESS)
                    | if updating { A_UPDATE_IN_PROGRESS } else { 0 }
            }
            STATUS_C => 0,
            STATUS_D => D_VALID_RAM,
            _ => self.ram[usize::from(index & 0x7f)],
        }
    }

    /// Writes port 0x70 + `offset`: 0x70 selects the register (bit 7 disables NMI), 0x71
    /// writes it.
    pub fn write(&mut self, offset: u8, value: u8, now_ns: u64) {
        if offset != 1 {
            self.index = value & 0x7f;
            self.nmi_disabled = value & 0x80 != 0;
            return;
        }
        let index = self.index;
        let set_held = self.ram[usize::from(STATUS_B)] & B_SET != 0;
        match index {
            _ if TIME_REGISTERS.contains(&index) => {
                if set_held {
                    self.ram[usize::from(index)] = value;
                } else {
                    // A direct write changes one field of the running clock.
                    self.freeze(now_ns);
                    self.ram[usize::from(index)] = value;
                    self.restart(now_ns);
                }
            }
            STATUS_A => self.ram[usize::from(index)] = value & !A_UPDATE_IN_PROGRESS,
            STATUS_B => {
                let value = if value & B_SET != 0 {
                    value & !B_UPDATE_INTERRUPT
                } else {
                    value
                };
                let starting = set_held && value & B_SET == 0;
                if !set_held && value & B_SET != 0 {
                    self.freeze(now_ns);
                }
                self.ram[usize::from(index)] = value;
                if starting {
                    self.restart(now_ns);
                }
            }
            STATUS_C | STATUS_D => {}
            _ => self.ram[usize::from(index & 0x7f)] = value,
        }
    }

    /// The clock's Unix time at guest time `now_ns`.
    pub fn unix_time(&self, now_ns: u64) -> i64 {
        self.base_unix_s.saturating_add((now_ns / NS_PER_S) as i64)
    }

    /// Copies the running time into the time registers, in the current format.
    fn freeze(&mut self, now_ns: u64) {
        let now = self.unix_time(now_ns);
        for index in TIME_REGISTERS {
            self.ram[usize::from(index)] = self.render(now, index);
        }
    }

    /// Restarts the clock from the time registers, as the guest left them.
    fn restart(&mut self, now_ns: u64) {
        let b = self.ram[usize::from(STATUS_B)];
        let decode = |index: u8| {
            let raw = self.ram[usize::from(index)];
            if b & B_BINARY != 0 {
                raw
            } else {
                from_bcd(raw)
            }
        };
        let mut hour = self.ram[usize::from(HOURS)];
        let pm = b & B_24_HOUR == 0 && hour & HOUR_PM != 0;
        if b & B_24_HOUR == 0 {
            hour &= !HOUR_PM;
        }
        let mut hour = if b & B_BINARY != 0 {
            hour
        } else {
            from_bcd(hour)
        };
        if b & B_24_HOUR == 0 {
            hour = hour % 12 + if pm { 12 } else { 0 };
        }
        let year = i64::from(decode(CENTURY)) * 100 + i64::from(decode(YEAR) % 100);
        let days = days_from_civil(year, decode(MONTH).clamp(1, 12), decode(DAY).clamp(1, 31));
        let seconds_of_day = i64::from(hour.min(23)) * 3600
            + i64::from(decode(MINUTES).min(59)) * 60
            + i64::from(decode(SECONDS).min(59));
        let target = days
            .saturating_mul(SECONDS_PER_DAY)
            .saturating_add(seconds_of_day);
        self.base_unix_s = target.saturating_sub((now_ns / NS_PER_S) as i64);
    }

    /// Time register `index` for Unix time `unix_s`, in the format register B selects.
    fn render(&self, unix_s: i64, index: u8) -> u8 {
        let b = self.ram[usize::from(STATUS_B)];
        let time = datetime_from_unix(unix_s);
        let encode = |value: u8| {
            if b & B_BINARY != 0 {
                value
            } else {
                to_bcd(value)
            }
        };
        match index {
            SECONDS => encode(time.second),
            MINUTES => encode(time.minute),
            HOURS if b & B_24_HOUR != 0 => encode(time.hour),
            HOURS => {
                let hour12 = match time.hour % 12 {
                    0 => 12,
                    h => h,
                };
                encode(hour12) | if time.hour >= 12 { HOUR_PM } else { 0 }
            }
            WEEKDAY => encode(time.weekday),
            DAY => encode(time.day),
            MONTH => encode(time.month),
            YEAR => encode(time.year.rem_euclid(100) as u8),
            CENTURY => encode(time.year.div_euclid(100).clamp(0, 99) as u8),
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOV_14_2023: u64 = 1_700_000_000; // Tuesday 2023-11-14 22:13:20 UTC

    fn read(cmos: &mut Cmos, index: u8, now_ns: u64) -> u8 {
        cmos.write(0, index, now_ns);
        cmos.read(1, now_ns)
    }

    fn write(cmos: &mut Cmos, index: u8, value: u8, now_ns: u64) {
        cmos.write(0, index, now_ns);
        cmos.write(1, value, now_ns);
    }

    fn time_registers(cmos: &mut Cmos, now_ns: u64) -> [u8; 8] {
        TIME_REGISTERS.map(|index| read(cmos, index, now_ns))
    }

    #[test]
    fn date_conversion_round_trips_and_hits_known_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(11_017), (2000, 3, 1));
        assert_eq!(civil_from_days(47_540), (2100, 2, 28));
        assert_eq!(
            civil_from_days(47_541),
            (2100, 3, 1),
            "2100 is not a leap year"
        );
        assert_eq!(civil_from_days(19_675), (2023, 11, 14));
        for days in (-800_000..800_000).step_by(97) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
            assert!((1..=12).contains(&m) && (1..=31).contains(&d));
        }
    }

    #[test]
    fn known_time_reads_back_in_bcd() {
        let mut cmos = Cmos::new(NOV_14_2023, 0, 0);
        // seconds, minutes, hours, weekday (Tuesday = 3), day, month, year, century
        assert_eq!(
            time_registers(&mut cmos, 0),
            [0x20, 0x13, 0x22, 0x03, 0x14, 0x11, 0x23, 0x20]
        );
        // 100 s of guest time later.
        assert_eq!(
            time_registers(&mut cmos, 100 * NS_PER_S)[..3],
            [0x00, 0x15, 0x22]
        );
    }

    #[test]
    fn known_time_reads_back_in_binary_and_12_hour() {
        let mut cmos = Cmos::new(NOV_14_2023, 0, 0);
        write(&mut cmos, STATUS_B, B_BINARY | B_24_HOUR, 0);
        assert_eq!(
            time_registers(&mut cmos, 0),
            [20, 13, 22, 3, 14, 11, 23, 20]
        );
        write(&mut cmos, STATUS_B, B_BINARY, 0);
        assert_eq!(read(&mut cmos, HOURS, 0), HOUR_PM | 10);
        write(&mut cmos, STATUS_B, 0, 0);
        assert_eq!(read(&mut cmos, HOURS, 0), HOUR_PM | 0x10);
        // Midnight is 12 AM.
        let mut cmos = Cmos::new(NOV_14_2023 - 22 * 3600 - 13 * 60 - 20, 0, 0);
        write(&mut cmos, STATUS_B, 0, 0);
        assert_eq!(read(&mut cmos, HOURS, 0), 0x12);
    }

    #[test]
    fn setting_the_clock_moves_it() {
        let mut cmos = Cmos::new(NOV_14_2023, 0, 0);
        // The mc146818 way: hold SET, write the fields, release SET.
        write(&mut cmos, STATUS_B, B_SET | B_24_HOUR, 5 * NS_PER_S);
        write(&mut cmos, HOURS, 0x08, 5 * NS_PER_S);
        write(&mut cmos, DAY, 0x01, 5 * NS_PER_S);
        write(&mut cmos, MONTH, 0x01, 5 * NS_PER_S);
        write(&mut cmos, YEAR, 0x24, 5 * NS_PER_S);
        assert_eq!(
            read(&mut cmos, HOURS, 9 * NS_PER_S),
            0x08,
            "frozen while SET"
        );
        write(&mut cmos, STATUS_B, B_24_HOUR, 9 * NS_PER_S);
        assert_eq!(cmos.unix_time(9 * NS_PER_S), 1_704_096_000 + 13 * 60 + 25);
        assert_eq!(
            time_registers(&mut cmos, 10 * NS_PER_S),
            [0x26, 0x13, 0x08, 0x02, 0x01, 0x01, 0x24, 0x20]
        );
        // A direct write to one field.
        write(&mut cmos, MINUTES, 0x45, 10 * NS_PER_S);
        assert_eq!(read(&mut cmos, MINUTES, 10 * NS_PER_S), 0x45);
        assert_eq!(read(&mut cmos, SECONDS, 10 * NS_PER_S), 0x26);
    }

    #[test]
    fn status_registers() {
        let mut cmos = Cmos::new(NOV_14_2023, 0, 0);
        assert_eq!(read(&mut cmos, STATUS_A, 0), A_DEFAULT);
        assert_eq!(
            read(&mut cmos, STATUS_A, NS_PER_S - 1000),
            A_DEFAULT | A_UPDATE_IN_PROGRESS
        );
        assert_eq!(
            read(&mut cmos, STATUS_A, NS_PER_S),
            A_DEFAULT,
            "UIP clears with guest time"
        );
        assert_eq!(read(&mut cmos, STATUS_D, 0), D_VALID_RAM);
        assert_eq!(read(&mut cmos, STATUS_C, 0), 0);
        // NMI-disable bit in the index; the index still selects.
        cmos.write(0, 0x80 | 0x40, 0);
        assert!(cmos.nmi_disabled());
        cmos.write(1, 0x5a, 0);
        assert_eq!(read(&mut cmos, 0x40, 0), 0x5a);
        assert!(!cmos.nmi_disabled());
    }

    #[test]
    fn memory_size_bytes() {
        // 2 GiB below 4 GiB, 1 GiB above.
        let mut cmos = Cmos::new(0, 2048 * MIB, 1024 * MIB);
        let word = |cmos: &mut Cmos, at: u8| {
            u16::from(read(cmos, at, 0)) | (u16::from(read(cmos, at + 1, 0)) << 8)
        };
        assert_eq!(word(&mut cmos, 0x15), 640);
        assert_eq!(word(&mut cmos, 0x17), 0xffff);
        assert_eq!(word(&mut cmos, 0x30), 0xffff);
        assert_eq!(u64::from(word(&mut cmos, 0x34)), (2048 - 16) * 16);
        assert_eq!(read(&mut cmos, 0x5b, 0), 0x00);
        assert_eq!(read(&mut cmos, 0x5c, 0), 0x40);
        assert_eq!(read(&mut cmos, 0x5d, 0), 0x00);
        // 32 MiB: extended memory fits.
        let mut small = Cmos::new(0, 32 * MIB, 0);
        assert_eq!(word(&mut small, 0x17), 31 * 1024);
        assert_eq!(word(&mut small, 0x34), 256);
    }
}
