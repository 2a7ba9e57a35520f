"""Analytics ahead of the alarm: predictive warnings (time to threshold)."""
