/*
 * attention_block.cuh: which query block and (sequence, head) pair a block of
 * a causal attention kernel owns, shared by the f32 (attention.cu) and
 * tensor-core (attention_tc.cu) kernels, whose grids are nqb query blocks
 * times BH = B*NH pairs.
 */
#ifndef LOMO_ATTENTION_BLOCK_CUH
#define LOMO_ATTENTION_BLOCK_CUH

/* Heavy blocks (long causal rows) first, so the tail of the grid is short: query blocks are
 * numbered from the end of the sequence. */
__device__ __forceinline__ void query_block(int BH, int nqb, int *bh, int *qb) {
    *bh = (int)(blockIdx.x % (unsigned)BH);
    *qb = nqb - 1 - (int)(blockIdx.x / (unsigned)BH);
}

#endif
