"""Backward compatibility only: the code of notebook 02 now lives in one module per role, and this module
re-exports their public names so that ``from rlhf_helpers.reward import ...`` keeps working.

* :mod:`rlhf_helpers.rater`: the rater, the IMDB sentiment classifier (synthetic human feedback);
* :mod:`rlhf_helpers.pairs`: comparison pairs ranked by the rater;
* :mod:`rlhf_helpers.reward_model`: the reward model learned from those pairs;
* :mod:`rlhf_helpers.auditor`: the auditor, the Rotten-Tomatoes bag-of-words model that only grades.

New code imports from those modules.
"""
from .auditor import (SECOND_JUDGE_SETTINGS, BagOfWordsSentiment, SecondJudgeSettings, auditor, bag_of_words,
                      ensure_auditor, ensure_second_judge, load_auditor, load_rotten_tomatoes, second_judge_reward,
                      second_judge_settings, train_auditor, train_second_judge)
from .pairs import (build_preference_pairs, ensure_pairs, rank_pairs, require_pairs, sample_candidates,
                    token_boundary_ok)
from .rater import (CLASSIFIER_ACCURACY_FLOORS, ID2LABEL, LABEL2ID, NonFiniteRewardError, SentimentReward,
                    WeakRaterError, check_classifier_accuracy, classifier_accuracy, classifier_says_positive,
                    ensure_classifier, extend_positions, log_odds, positive_index, review_openings, sentiment_reward,
                    train_classifier)
from .reward_model import (ensure_reward_model, load_reward_model, pairwise_accuracy, reward_model_scores,
                           train_reward_model)

__all__ = [
    # rater
    "CLASSIFIER_ACCURACY_FLOORS", "ID2LABEL", "LABEL2ID", "NonFiniteRewardError", "SentimentReward", "WeakRaterError",
    "check_classifier_accuracy", "classifier_accuracy", "classifier_says_positive", "ensure_classifier",
    "extend_positions", "log_odds", "positive_index", "review_openings", "sentiment_reward", "train_classifier",
    # pairs
    "build_preference_pairs", "ensure_pairs", "rank_pairs", "require_pairs", "sample_candidates", "token_boundary_ok",
    # reward model
    "ensure_reward_model", "load_reward_model", "pairwise_accuracy", "reward_model_scores", "train_reward_model",
    # auditor
    "SECOND_JUDGE_SETTINGS", "BagOfWordsSentiment", "SecondJudgeSettings", "auditor", "bag_of_words", "ensure_auditor",
    "ensure_second_judge", "load_auditor", "load_rotten_tomatoes", "second_judge_reward", "second_judge_settings",
    "train_auditor", "train_second_judge",
]
