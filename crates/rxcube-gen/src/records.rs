//! One row type per contract table. Each emits its fields in the contract's column order to a
//! [`FieldSink`] (a CSV line or Arrow column builders), so the row layout of a table is written
//! down once, here, next to the others.

use rxcube_model::TableName;

use crate::clock::Stamp;
use crate::ids::Label;

/// Receives the fields of one row, in contract column order.
pub(crate) trait FieldSink {
    fn int32(&mut self, v: i32);
    fn opt_int32(&mut self, v: Option<i32>);
    fn text(&mut self, v: &str);
    fn opt_text(&mut self, v: Option<&str>);
    /// An id: text, as every id of the contract is.
    fn id(&mut self, v: Label) {
        self.text(v.as_str());
    }
    fn opt_id(&mut self, v: Option<Label>) {
        self.opt_text(v.as_ref().map(Label::as_str));
    }
    /// A date as days since 1970-01-01.
    fn date(&mut self, epoch_day: i64);
    fn opt_date(&mut self, epoch_day: Option<i64>);
    fn instant(&mut self, v: Stamp);
    /// A decimal with two places given in hundredths (money in cents, hours in 1/100 h).
    fn hundredths(&mut self, v: i64);
    fn float64(&mut self, v: f64);
}

/// A row of a contract table.
pub(crate) trait Record {
    const TABLE: TableName;
    fn emit<S: FieldSink>(&self, sink: &mut S);
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct PharmacyRow<'a> {
    pub pharmacy_id: Label,
    pub valid_from: i64,
    pub valid_to: Option<i64>,
    pub name: &'a str,
    pub local_area: &'a str,
    pub service_area: &'a str,
    pub region: &'a str,
    pub timezone: Option<&'a str>,
    pub employees: i32,
    pub hours_per_week: i32,
}

impl Record for PharmacyRow<'_> {
    const TABLE: TableName = TableName::Pharmacies;
    fn emit<S: FieldSink>(&self, s: &mut S) {
        s.id(self.pharmacy_id);
        s.date(self.valid_from);
        s.opt_date(self.valid_to);
        s.text(self.name);
        s.text(self.local_area);
        s.text(self.service_area);
        s.text(self.region);
        s.opt_text(self.timezone);
        s.int32(self.employees);
        s.int32(self.hours_per_week);
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerGroupRow<'a> {
    pub pharmacy_id: Label,
    pub valid_from: i64,
    pub valid_to: Option<i64>,
    pub peer_group: &'a str,
    pub rx_target_minutes: Option<i32>,
}

impl Record for PeerGroupRow<'_> {
    const TABLE: TableName = TableName::PeerGroups;
    fn emit<S: FieldSink>(&self, s: &mut S) {
        s.id(self.pharmacy_id);
        s.date(self.valid_from);
        s.opt_date(self.valid_to);
        s.text(self.peer_group);
        s.opt_int32(self.rx_target_minutes);
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct TargetRow<'a> {
    pub peer_group: &'a str,
    pub metric: &'a str,
    pub tier: i32,
    pub effective_from: i64,
    pub value: f64,
    pub bonus_cents: i64,
}

impl Record for TargetRow<'_> {
    const TABLE: TableName = TableName::Targets;
    fn emit<S: FieldSink>(&self, s: &mut S) {
        s.text(self.peer_group);
        s.text(self.metric);
        s.int32(self.tier);
        s.date(self.effective_from);
        s.float64(self.value);
        s.hundredths(self.bonus_cents);
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct EmployeeRow<'a> {
    pub employee_id: Label,
    pub name: &'a str,
    pub ssn: &'a str,
    pub job_class: &'a str,
    pub hourly_rate_cents: i64,
    pub home_pharmacy_id: Label,
    pub hired_on: i64,
    pub terminated_on: Option<i64>,
}

impl Record for EmployeeRow<'_> {
    const TABLE: TableName = TableName::Employees;
    fn emit<S: FieldSink>(&self, s: &mut S) {
        s.id(self.employee_id);
        s.text(self.name);
        s.text(self.ssn);
        s.text(self.job_class);
        s.hundredths(self.hourly_rate_cents);
        s.id(self.home_pharmacy_id);
        s.date(self.hired_on);
        s.opt_date(self.terminated_on);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PayrollRow {
    pub employee_id: Label,
    pub pharmacy_id: Label,
    pub shift_start: Stamp,
    pub pay_code: &'static str,
    pub shift_end: Stamp,
    /// Paid hours in hundredths.
    pub hours: i64,
    pub cost_cents: i64,
}

impl Record for PayrollRow {
    const TABLE: TableName = TableName::Payroll;
    fn emit<S: FieldSink>(&self, s: &mut S) {
        s.id(self.employee_id);
        s.id(self.pharmacy_id);
        s.instant(self.shift_start);
        s.text(self.pay_code);
        s.instant(self.shift_end);
        s.hundredths(self.hours);
        s.hundredths(self.cost_cents);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PosRow {
    pub txn_id: Label,
    pub line_no: i32,
    pub pharmacy_id: Label,
    pub sold_at: Stamp,
    pub kind: &'static str,
    pub quantity: i32,
    pub amount_cents: i64,
    pub rx_id: Option<Label>,
}

impl Record for PosRow {
    const TABLE: TableName = TableName::Pos;
    fn emit<S: FieldSink>(&self, s: &mut S) {
        s.id(self.txn_id);
        s.int32(self.line_no);
        s.id(self.pharmacy_id);
        s.instant(self.sold_at);
        s.text(self.kind);
        s.int32(self.quantity);
        s.hundredths(self.amount_cents);
        s.opt_id(self.rx_id);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FillRow {
    pub rx_id: Label,
    pub fill_no: i32,
    pub pharmacy_id: Label,
    pub channel: &'static str,
    pub received_at: Stamp,
    pub filled_at: Stamp,
}

impl Record for FillRow {
    const TABLE: TableName = TableName::RxFills;
    fn emit<S: FieldSink>(&self, s: &mut S) {
        s.id(self.rx_id);
        s.int32(self.fill_no);
        s.id(self.pharmacy_id);
        s.text(self.channel);
        s.instant(self.received_at);
        s.instant(self.filled_at);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SurveyRow {
    pub response_id: Label,
    pub pharmacy_id: Label,
    pub responded_at: Stamp,
    pub rating: &'static str,
}

impl Record for SurveyRow {
    const TABLE: TableName = TableName::Surveys;
    fn emit<S: FieldSink>(&self, s: &mut S) {
        s.id(self.response_id);
        s.id(self.pharmacy_id);
        s.instant(self.responded_at);
        s.text(self.rating);
    }
}
