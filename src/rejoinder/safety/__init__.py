"""Safety: one policy on what users say and what the bot replies, wherever replies are made.

Layers, in order: word lists (`words.WordList`: better-profanity's, and lists of one's
own), then a learnt classifier (`rejoinder.modeling.classifier.Classifier`) above a
threshold, which reads a reply in its conversation. The policy (`policy.Safety`) checks
the user's latest message (and refuses politely, or goes on) and every candidate reply;
`generation` keeps the best safe candidate, draws again a bounded number of times, and
else answers a canned reply that changes the topic. Everything flagged is a `Flag`
(the text, the layer and the score that flagged it), carried on the reply so the server
can store it.
"""

from rejoinder.safety.policy import CONTENT_FILTER, Flag, Safety, SafetyConfig, SafetyError

__all__ = ["CONTENT_FILTER", "Flag", "Safety", "SafetyConfig", "SafetyError"]
