"""``python -m natter ...`` is the ``natter`` command."""

from natter.entry import main

main()
