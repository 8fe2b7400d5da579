"""Activation (automations, journeys, their state and outbox): declared home, built by its issue."""
