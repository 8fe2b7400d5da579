"""The 360-degree contact card: one row per golden customer with everything known of them."""
