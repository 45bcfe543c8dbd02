"""The out-of-domain verdict of an ood score, in words: what predictions.csv, the API and the page
show. Free of torch, so that a server of an exported model can say it too."""


def verdict(ood_score: float) -> str:
    """`not clothing` above the threshold (ood score 1); NaN (no ood fit) is never flagged."""
    return "not clothing" if ood_score > 1 else "clothing"
