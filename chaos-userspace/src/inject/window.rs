//! Time windows: when a fault may fire, as in `Mon-Fri 09:00-17:00` (local time) or
//! `daily 22:00-06:00 Europe/Paris`.
//!
//! Grammar: `DAYS START-END [ZONE]`. DAYS is `daily`, or a comma list of days and day ranges
//! (`Mon-Fri`, `Sat,Sun`, `Fri-Mon` wraps); START and END are `HH:MM` (END may be `24:00`);
//! an END before START crosses midnight and belongs to the day it starts on. ZONE is an IANA
//! name; without it the machine's local time zone (`TZ`, then /etc/localtime) is used.

use jiff::{Span, ZonedDateTime as Zoned, civil::Weekday, tz::TimeZone};

#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    text: String,
    /// Bit `n` set: the window opens on weekday `n` (Monday = 0).
    days: u8,
    /// Minutes since midnight.
    start: u16,
    end: u16,
    zone: Option<TimeZone>,
}

/// Day names: three letters or in full, any case.
const DAYS: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

fn day_index(text: &str) -> Result<u8, String> {
    let lower = text.to_ascii_lowercase();
    DAYS.iter()
        .position(|name| lower == *name || (lower.len() == 3 && name.starts_with(&lower)))
        .map(|i| i as u8)
        .ok_or_else(|| format!("`{text}` is not a day (Mon, Tue, ..., Sun)"))
}

fn minutes(text: &str) -> Result<u16, String> {
    let bad = || format!("`{text}` is not a time of day (HH:MM, 00:00 to 24:00)");
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let (h, m): (u16, u16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if m >= 60 || h > 24 || (h == 24 && m != 0) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

fn weekday_bit(day: Weekday) -> u8 {
    1 << (day.to_monday_zero_offset() as u8)
}

impl Window {
    pub fn parse(text: &str) -> Result<Self, String> {
        let parts: Vec<&str> = text.split_whitespace().collect();
        let (days_text, times, zone) = match parts.as_slice() {
            [d, t] => (*d, *t, None),
            [d, t, z] => (*d, *t, Some(*z)),
            _ => {
                return Err(
                    "give DAYS START-END [ZONE], for example \"Mon-Fri 09:00-17:00\"".into(),
                );
            }
        };
        let mut days = 0u8;
        if days_text.eq_ignore_ascii_case("daily") || days_text == "*" {
            days = 0x7f;
        } else {
            for item in days_text.split(',') {
                match item.split_once('-') {
                    Some((a, b)) => {
                        let (a, b) = (day_index(a)?, day_index(b)?);
                        let mut d = a;
                        loop {
                            days |= 1 << d;
                            if d == b {
                                break;
                            }
                            d = (d + 1) % 7;
                        }
                    }
                    None => days |= 1 << day_index(item)?,
                }
            }
        }
        let (start, end) = times
            .split_once('-')
            .ok_or_else(|| format!("`{times}`: give START-END, for example 09:00-17:00"))?;
        let (start, end) = (minutes(start)?, minutes(end)?);
        if start == end {
            return Err(format!("`{times}`: the window is empty (start = end)"));
        }
        if start == 24 * 60 {
            return Err(format!("`{times}`: a window cannot start at 24:00"));
        }
        let zone = zone
            .map(|z| TimeZone::get(z).map_err(|_| format!("`{z}` is not a known time zone")))
            .transpose()?;
        Ok(Self {
            text: text.to_string(),
            days,
            start,
            end,
            zone,
        })
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// `now` in the window's own zone.
    fn local(&self, now: &Zoned) -> Zoned {
        match &self.zone {
            Some(zone) => now.with_time_zone(zone.clone()),
            None => now.clone(),
        }
    }

    pub fn contains(&self, now: &Zoned) -> bool {
        let now = self.local(now);
        let t = now.hour() as u16 * 60 + now.minute() as u16;
        let today = self.days & weekday_bit(now.weekday()) != 0;
        if self.start < self.end {
            return today && (self.start..self.end).contains(&t);
        }
        let yesterday = self.days & weekday_bit(now.weekday().previous()) != 0;
        (today && t >= self.start) || (yesterday && t < self.end)
    }

    /// When the window is next open: `now` if it is, else its next start (within a week).
    pub fn next_open(&self, now: &Zoned) -> Option<Zoned> {
        if self.contains(now) {
            return Some(now.clone());
        }
        let local = self.local(now);
        (0..8i64).find_map(|days| {
            let day = local.checked_add(Span::new().days(days)).ok()?;
            if self.days & weekday_bit(day.weekday()) == 0 {
                return None;
            }
            let start = day
                .with()
                .hour((self.start / 60) as i8)
                .minute((self.start % 60) as i8)
                .second(0)
                .subsec_nanosecond(0)
                .build()
                .ok()?;
            (start > local).then_some(start)
        })
    }
}

/// Whether any window is open (no windows: always).
pub fn open(windows: &[Window], now: &Zoned) -> bool {
    windows.is_empty() || windows.iter().any(|w| w.contains(now))
}

/// How long until one of the windows opens (zero when one is open; None when none opens
/// within a week).
pub fn until_open(windows: &[Window], now: &Zoned) -> Option<std::time::Duration> {
    if open(windows, now) {
        return Some(std::time::Duration::ZERO);
    }
    windows
        .iter()
        .filter_map(|w| w.next_open(now))
        .min()
        .and_then(|at| {
            let nanos = at.timestamp().as_nanosecond() - now.timestamp().as_nanosecond();
            u64::try_from(nanos)
                .ok()
                .map(std::time::Duration::from_nanos)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Zoned {
        // A fixed zone keeps the tests independent of the machine's.
        format!("{text}[UTC]").parse().unwrap()
    }

    #[test]
    fn office_hours() {
        let w = Window::parse("Mon-Fri 09:00-17:00 UTC").unwrap();
        // 2026-11-30 is a Monday.
        assert!(w.contains(&at("2026-11-30T09:00")));
        assert!(w.contains(&at("2026-11-30T16:59")));
        assert!(!w.contains(&at("2026-11-30T17:00")));
        assert!(!w.contains(&at("2026-11-30T08:59")));
        assert!(!w.contains(&at("2026-11-29T12:00"))); // Sunday
        assert_eq!(
            w.next_open(&at("2026-11-28T12:00")).unwrap(),
            at("2026-11-30T09:00")
        );
        assert_eq!(
            until_open(&[w], &at("2026-11-30T08:00")),
            Some(std::time::Duration::from_secs(3600))
        );
    }

    #[test]
    fn overnight_and_lists() {
        let w = Window::parse("Fri,sat 22:00-06:00 UTC").unwrap();
        assert!(w.contains(&at("2026-12-04T23:00"))); // Friday night
        assert!(w.contains(&at("2026-12-05T05:00"))); // Saturday early: Friday's window
        assert!(w.contains(&at("2026-12-06T05:59"))); // Sunday early: Saturday's window
        assert!(!w.contains(&at("2026-12-07T05:00"))); // Monday early: Sunday has none
        let all = Window::parse("daily 00:00-24:00").unwrap();
        assert!(all.contains(&at("2026-12-07T23:59")));
        let wrap = Window::parse("Sat-Mon 10:00-11:00 UTC").unwrap();
        assert!(wrap.contains(&at("2026-11-29T10:30"))); // Sunday
        assert!(!wrap.contains(&at("2026-12-01T10:30"))); // Tuesday
    }

    #[test]
    fn bad_windows_say_why() {
        for (text, want) in [
            ("Mon-Fri", "give DAYS START-END"),
            ("Mo 09:00-10:00", "`Mo` is not a day"),
            ("Mon 9:00-10:00", "`9:00` is not a time of day"),
            ("Mon 09:00-25:00", "`25:00` is not a time of day"),
            ("Mon 09:00-09:00", "the window is empty"),
            ("Mon 09:00", "give START-END"),
            (
                "Mon 09:00-10:00 Mars/Olympus",
                "`Mars/Olympus` is not a known time zone",
            ),
        ] {
            let err = Window::parse(text).unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
    }
}
