"""A seeded pseudo-random permutation of 0..n-1 that needs no memory: shuffled brute force
walks spaces of 10**8 candidates and more, which a shuffled list could not hold. A 4-round
Feistel network permutes the smallest even-bit domain holding n, and cycle walking (applying
it again while the result is >= n) restricts it to 0..n-1, which keeps it a bijection."""

MASK64 = (1 << 64) - 1
ROUNDS = 4


def _mix(x: int) -> int:
    """SplitMix64's finalizer: every input bit changes about half of the output bits."""
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9 & MASK64
    x = (x ^ (x >> 27)) * 0x94D049BB133111EB & MASK64
    return x ^ (x >> 31)


class Permutation:
    """`p(i)` is the candidate at position i of the seeded order; the same `seed` and `n`
    give the same order on every machine and in every worker."""

    def __init__(self, n: int, seed: int) -> None:
        if n < 1:
            raise ValueError(f"a permutation needs n >= 1, got {n}")
        self.n = n
        self.half = max(1, ((n - 1).bit_length() + 1) // 2)
        self.mask = (1 << self.half) - 1
        self.keys = [_mix(seed * ROUNDS + r + 1) for r in range(ROUNDS)]

    def _round_trip(self, x: int) -> int:
        left, right = x >> self.half, x & self.mask
        for key in self.keys:
            left, right = right, left ^ (_mix(right ^ key) & self.mask)
        return (left << self.half) | right

    def __call__(self, i: int) -> int:
        if not 0 <= i < self.n:
            raise IndexError(f"position {i} is outside 0..{self.n - 1}")
        x = self._round_trip(i)
        while x >= self.n:  # at most a few steps: the domain is under 4 n
            x = self._round_trip(x)
        return x
