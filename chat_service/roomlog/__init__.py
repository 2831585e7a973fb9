"""The room log: every change to a room as an entry with the room's next ``seq``, and the views
derived from it (DESIGN.md rules 13 and 17, PROTOCOL.md section 8, docs/subjects.md "Room logs").

* :mod:`.bodies`: what a stored entry's body is (the ``data`` of its client frame);
* :mod:`.reads`: reading a range of entries by a contiguous key (room ``seq`` on the whole log,
  message count on the messages, thread count on one thread) with batched direct gets;
* :mod:`.log`: appending (one publish, or an atomic batch for an event and the message state
  it changes), the room's tail, single messages, states, purges;
* :mod:`.state`: a message's current state (edits, deletion, reactions) as pure logic;
* :mod:`.pages`: the answers: materialised pages (``history``, ``joined``) and raw replays
  (``joined`` with ``since``, gateway gap fills).
"""
