"""outreach: personalised letters to members of the U.S. Congress, sent with a record of each."""

__version__ = "0.1.0"
