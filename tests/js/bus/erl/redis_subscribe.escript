#!/usr/bin/env escript
%% Subscribes to a Redis channel over a plain TCP connection (RESP by hand), reads COUNT
%% messages, decodes each with binary_to_term (as phoenix_pubsub_redis's RedisServer does) and
%% prints it as one line of JSON that keeps Erlang's types apart:
%%   integer → number, float → {"float": text}, atom → {"atom": base64 of its name},
%%   binary → {"bin": base64}, list → [...], tuple → {"tuple": [...]},
%%   map → {"map": [[key, value], ...]}, anything else → {"other": "~p text"}.
%% Prints "subscribed" once the subscription is confirmed.
%%
%%   escript redis_subscribe.escript PORT CHANNEL COUNT
main([Port, Channel, Count]) ->
    {ok, S} = gen_tcp:connect({127, 0, 0, 1}, list_to_integer(Port), [binary, {active, false}], 5000),
    ok = gen_tcp:send(S, resp([<<"SUBSCRIBE">>, list_to_binary(Channel)])),
    loop(S, <<>>, list_to_integer(Count)).

loop(_S, _Buf, 0) ->
    ok;
loop(S, Buf, Left) ->
    case parse(Buf) of
        more ->
            case gen_tcp:recv(S, 0, 30000) of
                {ok, Data} -> loop(S, <<Buf/binary, Data/binary>>, Left);
                {error, Reason} -> io:format(standard_error, "recv: ~p~n", [Reason]), halt(1)
            end;
        {[<<"subscribe">>, _, _], Rest} ->
            io:format("subscribed~n"),
            loop(S, Rest, Left);
        {[<<"message">>, _, Payload], Rest} ->
            io:format("~s~n", [j(binary_to_term(Payload))]),
            loop(S, Rest, Left - 1);
        {_, Rest} ->
            loop(S, Rest, Left)
    end.

resp(Args) ->
    [io_lib:format("*~b\r\n", [length(Args)]) |
     [[io_lib:format("$~b\r\n", [byte_size(A)]), A, <<"\r\n">>] || A <- Args]].

parse(<<"*", R/binary>>) ->
    case line(R) of
        {N, R1} -> elems(binary_to_integer(N), R1, []);
        more -> more
    end;
parse(<<"$", R/binary>>) ->
    case line(R) of
        {N, R1} ->
            L = binary_to_integer(N),
            case R1 of
                <<B:L/binary, "\r\n", R2/binary>> -> {B, R2};
                _ -> more
            end;
        more -> more
    end;
parse(<<":", R/binary>>) ->
    case line(R) of
        {N, R1} -> {binary_to_integer(N), R1};
        more -> more
    end;
parse(_) ->
    more.

line(B) ->
    case binary:split(B, <<"\r\n">>) of
        [L, R] -> {L, R};
        _ -> more
    end.

elems(0, R, Acc) -> {lists:reverse(Acc), R};
elems(N, R, Acc) ->
    case parse(R) of
        more -> more;
        {V, R1} -> elems(N - 1, R1, [V | Acc])
    end.

j(T) when is_integer(T) -> integer_to_list(T);
j(T) when is_float(T) -> ["{\"float\":\"", float_to_list(T, [short]), "\"}"];
j(T) when is_atom(T) -> ["{\"atom\":\"", base64:encode(atom_to_binary(T, utf8)), "\"}"];
j(T) when is_binary(T) -> ["{\"bin\":\"", base64:encode(T), "\"}"];
j(T) when is_list(T) -> ["[", join([j(E) || E <- T]), "]"];
j(T) when is_tuple(T) -> ["{\"tuple\":[", join([j(E) || E <- tuple_to_list(T)]), "]}"];
j(T) when is_map(T) ->
    ["{\"map\":[", join([["[", j(K), ",", j(V), "]"] || {K, V} <- maps:to_list(T)]), "]}"];
j(T) -> ["{\"other\":\"", base64:encode(list_to_binary(io_lib:format("~p", [T]))), "\"}"].

join([]) -> [];
join([H | T]) -> [H | [[",", E] || E <- T]].
