// Package billing is Pi's usage meter: it prices recorded usage (pod starts,
// Services, Floating IPs) with a user-editable price list and prints the bill.
// It is pure Go and touches nothing on the machine except the price file.
//
// Rules, all as of the bill's time At (usage still open is counted up to At, so a
// bill can be projected forwards or backwards):
//
//   - Durations are rounded up to whole seconds: a started second is billed.
//   - Pods are billed per second at their size's rate; each start is billed at
//     least Prices.Pod.Minimum (60 s). The size is the smallest that holds the
//     sum of the containers' memory limits (SizeFor; binary units, 64 MB = 64 MiB).
//   - A Service is billed per second at PerHour/3600 and at least
//     Prices.Service.Minimum (1 h) over its life (records sharing a UID).
//   - A Floating IP costs PerMonth at allocation and again at each monthly
//     anniversary at which it is still held (charged if the anniversary is at or
//     before At and strictly before its release). Anniversaries are calendar
//     months in the allocation's location, computed from the allocation date and
//     clamped to the month's last day (see Anniversary): allocated Jan 31, it is
//     charged again Feb 28 (29), Mar 31, Apr 30, ...
//   - Amounts are exact rationals (Money). Totals are exact sums, rounded to the
//     cent half up (ties away from zero) only when shown; line costs are shown to
//     6 decimals. So a shown total can differ by a cent from the sum of the shown
//     figures above it, never from the exact amount.
//
// The price file is YAML (see RenderPrices for the commented default);
// LoadPrices overlays it on DefaultPrices and rejects unknown fields, duplicate
// keys and bad values with an error naming the file and the field.
package billing
