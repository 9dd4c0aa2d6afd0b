"""Real transformer representations as a task (``docs/text.md``): the paper's template sentences, their hidden states
from a pretrained model (the optional extra ``slr[text]``), and the linear probes that read them."""
