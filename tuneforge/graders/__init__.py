"""Graders: OpenAI's grader objects (string_check, text_similarity, score_model,
label_model, python, multi) and tuneforge's own `tuneforge_checks`, each scoring a model's
answer (the `sample`) to a data line (the `item`) from 0 to 1, for reinforcement
fine-tuning's rewards and OpenAI's run and validate endpoints.

| module        | what it holds                                                           |
|---------------|-------------------------------------------------------------------------|
| `spec`        | the grader objects and `parse_grader`, which names every bad field      |
| `templates`   | `{{item.…}}` and `{{sample.…}}` references and their rendering          |
| `similarity`  | text_similarity's metrics (BLEU, GLEU, METEOR, ROUGE, fuzzy match)      |
| `formula`     | the multi grader's `calculate_output`, parsed without eval              |
| `judge`       | model graders' prompts, and the score or label read from the answer     |
| `sandbox`     | python graders in a confined process (`python_child` runs in it)        |
| `checks`      | `tuneforge_checks`: the generation checks as a reward                   |
| `run`         | `run_grader`: a grader on one sample, with OpenAI's run report          |
| `backends`    | judges, embeddings and the sandbox's limits from this machine           |
"""
