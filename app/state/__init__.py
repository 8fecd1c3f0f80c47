"""Session state that is not the session record itself: Qt-free evented models (psygnal)."""
