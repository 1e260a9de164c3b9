"""The helpers every RL recipe shares after training."""

from medrlvr_trl.recipe_setup import last_metrics


def test_last_metrics_takes_the_last_update_with_verifier_metrics_and_the_trainers_kl_key():
    history = [
        {"verifier/reward": 0.1, "verifier/accuracy": 0.2, "kl": 0.5},
        {"verifier/reward": 0.123456, "verifier/format_ok": 1.0, "objective/kl": 0.01, "kl": 0.3},
        {"train_runtime": 12.0},  # the trainer's closing row has no verifier metrics
    ]
    assert last_metrics(history, kl_key="objective/kl") == {
        "verifier/reward": 0.1235,
        "verifier/format_ok": 1.0,
        "objective/kl": 0.01,
    }
    assert last_metrics(history, kl_key="kl")["kl"] == 0.3
    assert last_metrics([{"train_runtime": 1.0}], kl_key="kl") == {}
