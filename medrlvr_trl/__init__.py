"""medrlvr-trl: Med-RLVR (PPO with a verifiable reward for medical multiple-choice reasoning) on TRL.

The recipes in `recipes/` are the entry points; modules here hold one job each and do no I/O on import.
"""
